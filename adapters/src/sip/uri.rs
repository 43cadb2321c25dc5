//! SIP URIs (RFC 3261 §19.1), the subset a signalling leg needs: scheme,
//! user, host, port and URI parameters. Headers (`?…`) are refused.

use core::fmt;
use std::net::{IpAddr, SocketAddr};

use super::SipError;

/// Longest URI accepted.
pub const MAX_URI_BYTES: usize = 512;
/// Most URI parameters accepted.
const MAX_URI_PARAMS: usize = 16;

/// `sip:` or `sips:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain SIP.
    Sip,
    /// SIP over TLS end to end.
    Sips,
}

/// A parsed `sip:`/`sips:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// The scheme.
    pub scheme: Scheme,
    /// The user part (still escaped as written), if any.
    pub user: Option<String>,
    /// The host: a name, an IPv4 literal or an IPv6 literal without brackets.
    pub host: String,
    /// The port, if written.
    pub port: Option<u16>,
    /// URI parameters in order (`;transport=tcp`, `;lr`).
    pub params: Vec<(String, Option<String>)>,
}

fn is_user_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.!~*'()%&=+$,;?/".contains(&b)
}

fn is_host_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.".contains(&b)
}

fn is_param_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.!~*'()%[]/:&+$".contains(&b)
}

impl SipUri {
    /// Parses `sip:user@host:port;params`.
    pub fn parse(text: &str) -> Result<Self, SipError> {
        let bad = |reason| Err(SipError::BadUri { reason });
        if text.len() > MAX_URI_BYTES {
            return bad("longer than 512 bytes");
        }
        let (scheme, rest) = if let Some(rest) = strip_prefix_ci(text, "sips:") {
            (Scheme::Sips, rest)
        } else if let Some(rest) = strip_prefix_ci(text, "sip:") {
            (Scheme::Sip, rest)
        } else {
            return bad("scheme is not sip: or sips:");
        };
        if rest.contains('?') {
            return bad("URI headers (`?`) are not accepted");
        }
        let (user, hostport_params) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        if let Some(user) = user
            && (user.is_empty() || !user.bytes().all(|b| is_user_char(b) || b == b':'))
        {
            return bad("user part has characters outside RFC 3261");
        }
        let (hostport, params_text) = match hostport_params.find(';') {
            Some(semi) => (&hostport_params[..semi], Some(&hostport_params[semi + 1..])),
            None => (hostport_params, None),
        };
        let (host, port) = split_host_port(hostport)?;
        let mut params = Vec::new();
        if let Some(params_text) = params_text {
            for param in params_text.split(';') {
                if params.len() == MAX_URI_PARAMS {
                    return bad("more than 16 parameters");
                }
                let (name, value) = match param.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (param, None),
                };
                let ok = |s: &str| !s.is_empty() && s.bytes().all(is_param_char);
                if !ok(name) || value.is_some_and(|v| !ok(v)) {
                    return bad("malformed parameter");
                }
                params.push((name.to_owned(), value.map(str::to_owned)));
            }
        }
        Ok(Self { scheme, user: user.map(str::to_owned), host: host.to_owned(), port, params })
    }

    /// A parameter's value (`Some(None)` for a flag like `lr`).
    #[must_use]
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_deref())
    }

    /// Whether `;transport=tcp` (or `sips:`, which implies TLS over TCP) asks for a stream.
    #[must_use]
    pub fn wants_stream(&self) -> bool {
        self.scheme == Scheme::Sips
            || self
                .param("transport")
                .flatten()
                .is_some_and(|t| t.eq_ignore_ascii_case("tcp") || t.eq_ignore_ascii_case("tls"))
    }

    /// The socket address when the host is an IP literal; the port defaults
    /// to 5060 (5061 for `sips:`). Host names need a resolver, which is not
    /// sans-IO: the caller resolves them.
    #[must_use]
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let ip: IpAddr = self.host.parse().ok()?;
        let default = if self.scheme == Scheme::Sips { 5061 } else { 5060 };
        Some(SocketAddr::new(ip, self.port.unwrap_or(default)))
    }
}

fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

/// Splits `host[:port]` or `[v6][:port]`.
pub(crate) fn split_host_port(text: &str) -> Result<(&str, Option<u16>), SipError> {
    let bad = |reason| Err(SipError::BadUri { reason });
    let (host, port_text) = if let Some(rest) = text.strip_prefix('[') {
        let Some(close) = rest.find(']') else { return bad("unclosed IPv6 literal") };
        let host = &rest[..close];
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return bad("bad IPv6 literal");
        }
        match &rest[close + 1..] {
            "" => (host, None),
            after => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return bad("junk after IPv6 literal"),
            },
        }
    } else {
        let (host, port) = match text.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        };
        if host.is_empty() || !host.bytes().all(is_host_char) {
            return bad("host is empty or has characters outside a host name");
        }
        (host, port)
    };
    let port = match port_text {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return bad("port is not a number from 1 to 65535"),
        },
    };
    Ok((host, port))
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.scheme {
            Scheme::Sip => "sip:",
            Scheme::Sips => "sips:",
        })?;
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        for (name, value) in &self.params {
            write!(f, ";{name}")?;
            if let Some(value) = value {
                write!(f, "={value}")?;
            }
        }
        Ok(())
    }
}

/// Keeps only the characters a SIP user part may carry (RFC 3261 `unreserved`
/// plus `+`), at most 64 of them: phone numbers from Twilio (`+14155550100`,
/// `client:alice`) become safe user parts and `{to}`/`{from}` substitutions.
#[must_use]
pub fn sanitize_user(text: &str) -> String {
    text.bytes()
        .filter(|b| b.is_ascii_alphanumeric() || b"+-_.!~*'".contains(b))
        .take(64)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_common_uris() {
        for text in [
            "sip:alice@192.0.2.1:5070;transport=tcp",
            "sips:bob@pbx.example.com",
            "sip:[2001:db8::1]:5060;lr",
            "sip:+14155550100@10.0.0.1",
            "sip:10.0.0.1",
        ] {
            let uri = SipUri::parse(text).unwrap();
            assert_eq!(uri.to_string(), text);
        }
        let uri = SipUri::parse("SIP:alice@192.0.2.1:5070;transport=TCP").unwrap();
        assert!(uri.wants_stream());
        assert_eq!(uri.socket_addr(), Some("192.0.2.1:5070".parse().unwrap()));
        assert_eq!(SipUri::parse("sips:b@[::1]").unwrap().socket_addr(), Some("[::1]:5061".parse().unwrap()));
        assert_eq!(SipUri::parse("sip:pbx.example.com").unwrap().socket_addr(), None);
    }

    #[test]
    fn refuses_bad_uris() {
        for text in [
            "tel:+1415",
            "sip:",
            "sip:a@",
            "sip:a@h:0",
            "sip:a@h:99999",
            "sip:a@h;=x",
            "sip:a@h?subject=x",
            "sip:a b@h",
            "sip:a@[::1",
            "sip:a@h:5060x",
        ] {
            assert!(SipUri::parse(text).is_err(), "{text}");
        }
        assert!(SipUri::parse(&format!("sip:{}@h", "a".repeat(600))).is_err());
    }

    #[test]
    fn sanitizes_users() {
        assert_eq!(sanitize_user("+1 (415) 555-0100"), "+1415555-0100");
        assert_eq!(sanitize_user("client:alice@x"), "clientalicex");
        assert_eq!(sanitize_user(&"9".repeat(100)).len(), 64);
    }
}
