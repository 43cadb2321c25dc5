//! One URL type for every URL voxproxy validates: `server.public_url`,
//! `twilio.api_base`, the signature module's public base URL and WebSocket
//! backends (`ws://…`, `wss://…`).
//!
//! Parsing is [`http::Uri`]'s (RFC 3986 characters, authority, IPv6
//! brackets, port digits), already a dependency of both crates that need it;
//! the `url` crate was not chosen because it implements the WHATWG URL
//! standard (IDNA, silent percent-encoding of what it does not like, default
//! port removal), which would rewrite a URL Twilio signs byte for byte. On
//! top of `http::Uri` this module adds what voxproxy needs and `http::Uri`
//! leaves open:
//!
//! - **Scheme and host are case-insensitive** (RFC 3986 §3.1, §3.2.2) and are
//!   written lower-case: `HTTPS://Voice.Example.com` is
//!   `https://voice.example.com`. The path and query keep their spelling:
//!   they are case-sensitive and part of what Twilio signs.
//! - **Refused**: a fragment (`http::Uri` would drop it silently), user name
//!   or password (credentials would end up in logs and error messages), port
//!   0, an empty port (`host:`), hosts other than a DNS name (letters, digits,
//!   `-`, `.`), an IPv4 address or a bracketed IPv6 address, spaces and
//!   control characters, and URLs longer than [`MAX_URL_LEN`].
//! - [`Url::parse_base`] is the form of a base URL that paths are appended
//!   to: no query, and without a trailing `/`.
//!
//! ```
//! use voxproxy_adapters::url::{Scheme, Url};
//!
//! let url = Url::parse_base("HTTPS://Voice.Example.com/Proxy/", &[Scheme::Http, Scheme::Https])?;
//! assert_eq!(url.as_str(), "https://voice.example.com/Proxy");
//! assert_eq!(url.scheme(), Scheme::Https);
//! assert_eq!(url.to_string() + "/twilio/voice", "https://voice.example.com/Proxy/twilio/voice");
//!
//! let bot = Url::parse("wss://bot.example.com/agent?tenant=acme")?;
//! assert_eq!((bot.host(), bot.port_or_default(), bot.query()), ("bot.example.com", 443, Some("tenant=acme")));
//! # Ok::<(), voxproxy_adapters::url::UrlError>(())
//! ```

use core::fmt;
use std::net::Ipv6Addr;

/// Longest URL accepted, in bytes. Twilio limits webhook URLs to 4,000
/// characters; a base URL longer than that could never be signed.
pub const MAX_URL_LEN: usize = 4096;

/// The schemes voxproxy speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `http`.
    Http,
    /// `https`.
    Https,
    /// `ws`: WebSocket over plain TCP.
    Ws,
    /// `wss`: WebSocket over TLS.
    Wss,
}

impl Scheme {
    /// Every scheme, in declaration order.
    pub const ALL: [Scheme; 4] = [Scheme::Http, Scheme::Https, Scheme::Ws, Scheme::Wss];

    /// The scheme's lower-case name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        }
    }

    /// The port a URL of this scheme means when it names none.
    #[must_use]
    pub const fn default_port(self) -> u16 {
        match self {
            Scheme::Http | Scheme::Ws => 80,
            Scheme::Https | Scheme::Wss => 443,
        }
    }

    /// Whether the scheme runs over TLS.
    #[must_use]
    pub const fn is_tls(self) -> bool {
        matches!(self, Scheme::Https | Scheme::Wss)
    }

    /// The WebSocket scheme of an HTTP scheme and the other way round
    /// (`https` ↔ `wss`, `http` ↔ `ws`): the spelling Twilio connects a
    /// `<Stream>` with.
    #[must_use]
    pub const fn websocket_twin(self) -> Scheme {
        match self {
            Scheme::Http => Scheme::Ws,
            Scheme::Https => Scheme::Wss,
            Scheme::Ws => Scheme::Http,
            Scheme::Wss => Scheme::Https,
        }
    }

    fn from_name(name: &str) -> Option<Scheme> {
        Scheme::ALL.into_iter().find(|s| s.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not a URL voxproxy accepts. `Display` says what to fix.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlError {
    /// Longer than [`MAX_URL_LEN`] bytes.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// Contains a space or a control character.
    Whitespace,
    /// Does not start with `scheme://`.
    NoScheme,
    /// A scheme other than the ones allowed where it is used.
    Scheme {
        /// The scheme as written (at most 16 characters of it).
        found: String,
        /// The schemes allowed there, such as `http:// or https://`.
        allowed: String,
    },
    /// Has a `#fragment`, which is never sent to a server.
    Fragment,
    /// Has a query where only a base URL is allowed.
    Query,
    /// Carries a user name or password.
    UserInfo,
    /// Has no host.
    NoHost,
    /// The host is not a DNS name, an IPv4 address or a bracketed IPv6 address.
    Host,
    /// The port is empty, 0 or not a number up to 65535.
    Port,
    /// Not a URL by RFC 3986 (`http::Uri` refused it).
    Syntax,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::TooLong { len } => {
                write!(f, "the URL is {len} bytes long; at most {MAX_URL_LEN} are accepted")
            }
            UrlError::Whitespace => f.write_str("a URL must not contain spaces or control characters"),
            UrlError::NoScheme => f.write_str("expected a URL that starts with its scheme, such as https://"),
            UrlError::Scheme { found, allowed } => {
                write!(f, "the URL's scheme is \"{found}\"; it must start with {allowed}")
            }
            UrlError::Fragment => f.write_str("the URL must not have a fragment (\"#…\")"),
            UrlError::Query => f.write_str("the URL must not have a query string (\"?…\")"),
            UrlError::UserInfo => f.write_str(
                "the URL must not carry a user name or password (they would show in logs and messages)",
            ),
            UrlError::NoHost => f.write_str("the URL has no host"),
            UrlError::Host => f.write_str(
                "the URL's host must be a DNS name (letters, digits, \"-\" and \".\"), an IPv4 address \
                 or an IPv6 address in brackets",
            ),
            UrlError::Port => f.write_str("the URL's port must be a number from 1 to 65535"),
            UrlError::Syntax => f.write_str("this is not a valid URL"),
        }
    }
}

impl core::error::Error for UrlError {}

/// A validated absolute URL, scheme and host in lower case. See the
/// [module docs](self). `Display` and [`Url::as_str`] give the normalised text.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Url {
    text: String,
    scheme: Scheme,
    /// Byte range of the host in `text` (with brackets for IPv6).
    host: core::ops::Range<usize>,
    port: Option<u16>,
    /// Byte offset in `text` where the path starts (the end of the authority).
    path_start: usize,
}

impl Url {
    /// Parses an absolute URL of any [`Scheme`], with optional path and query.
    ///
    /// # Errors
    /// The [`UrlError`] that says what is wrong.
    pub fn parse(text: &str) -> Result<Url, UrlError> {
        if text.len() > MAX_URL_LEN {
            return Err(UrlError::TooLong { len: text.len() });
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(UrlError::Whitespace);
        }
        let Some((scheme_text, _)) = text.split_once("://") else {
            return Err(UrlError::NoScheme);
        };
        let scheme = Scheme::from_name(scheme_text).ok_or_else(|| UrlError::Scheme {
            found: scheme_text.chars().take(16).collect(),
            allowed: allowed_list(&Scheme::ALL),
        })?;
        if text.contains('#') {
            return Err(UrlError::Fragment);
        }
        let uri: http::Uri = text.parse().map_err(|_| UrlError::Syntax)?;
        let authority = uri.authority().ok_or(UrlError::NoHost)?;
        if authority.as_str().contains('@') {
            return Err(UrlError::UserInfo);
        }
        let (host, port) = split_host_port(authority.as_str())?;
        let mut normalised = String::with_capacity(text.len());
        normalised.push_str(scheme.as_str());
        normalised.push_str("://");
        let host_start = normalised.len();
        normalised.extend(host.chars().map(|c| c.to_ascii_lowercase()));
        let host_end = normalised.len();
        if let Some(port) = port {
            normalised.push(':');
            normalised.push_str(&port.to_string());
        }
        let path_start = normalised.len();
        // What follows the authority, as written (`http::Uri` would turn an
        // empty path into "/", which Twilio would not have signed).
        let rest_at = scheme_text.len() + 3 + authority.as_str().len();
        normalised.push_str(text.get(rest_at..).unwrap_or_default());
        Ok(Url { text: normalised, scheme, host: host_start..host_end, port, path_start })
    }

    /// Parses a base URL that paths are appended to: one of `schemes`, no
    /// query, and a trailing `/` dropped (`https://x.example/` is
    /// `https://x.example`).
    ///
    /// # Errors
    /// The [`UrlError`] that says what is wrong.
    pub fn parse_base(text: &str, schemes: &[Scheme]) -> Result<Url, UrlError> {
        let mut url = Url::parse(text).map_err(|e| match e {
            UrlError::Scheme { found, .. } => UrlError::Scheme { found, allowed: allowed_list(schemes) },
            other => other,
        })?;
        if !schemes.contains(&url.scheme) {
            return Err(UrlError::Scheme {
                found: url.scheme.as_str().to_owned(),
                allowed: allowed_list(schemes),
            });
        }
        if url.query().is_some() {
            return Err(UrlError::Query);
        }
        let kept = url.text.trim_end_matches('/').len().max(url.path_start);
        url.text.truncate(kept);
        Ok(url)
    }

    /// The normalised URL.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The scheme.
    #[must_use]
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host in lower case; an IPv6 address keeps its brackets.
    #[must_use]
    pub fn host(&self) -> &str {
        &self.text[self.host.clone()]
    }

    /// The port as written, `None` when the URL names none.
    #[must_use]
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The port, or the scheme's default when the URL names none.
    #[must_use]
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(self.scheme.default_port())
    }

    /// Path and query as written (empty when the URL ends after the host).
    #[must_use]
    pub fn path_and_query(&self) -> &str {
        &self.text[self.path_start..]
    }

    /// The query without its `?`, if there is one.
    #[must_use]
    pub fn query(&self) -> Option<&str> {
        self.path_and_query().split_once('?').map(|(_, query)| query)
    }

    /// The same URL with the scheme's WebSocket/HTTP twin
    /// ([`Scheme::websocket_twin`]): `https://x/m` → `wss://x/m`.
    #[must_use]
    pub fn websocket_twin(&self) -> Url {
        let twin = self.scheme.websocket_twin();
        let old_len = self.scheme.as_str().len();
        let new_len = twin.as_str().len();
        let shift = |at: usize| at - old_len + new_len;
        Url {
            text: format!("{twin}{}", &self.text[old_len..]),
            scheme: twin,
            host: shift(self.host.start)..shift(self.host.end),
            port: self.port,
            path_start: shift(self.path_start),
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl core::str::FromStr for Url {
    type Err = UrlError;

    fn from_str(text: &str) -> Result<Url, UrlError> {
        Url::parse(text)
    }
}

fn allowed_list(schemes: &[Scheme]) -> String {
    let names: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
    match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// The host and port of an authority without user info, checked.
fn split_host_port(authority: &str) -> Result<(&str, Option<u16>), UrlError> {
    let (host, port) = if let Some(inside) = authority.strip_prefix('[') {
        let close = inside.find(']').ok_or(UrlError::Host)?;
        if inside[..close].parse::<Ipv6Addr>().is_err() {
            return Err(UrlError::Host);
        }
        let after = &inside[close + 1..];
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(UrlError::Host)?),
        };
        (&authority[..close + 2], port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(UrlError::NoHost);
    }
    let dns_name = |h: &str| {
        h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
    };
    if !host.starts_with('[') && !dns_name(host.strip_suffix('.').unwrap_or(host)) {
        return Err(UrlError::Host);
    }
    let port = match port {
        None => None,
        Some(digits) => {
            let valid = !digits.is_empty() && digits.len() <= 5 && digits.bytes().all(|b| b.is_ascii_digit());
            match digits.parse::<u16>() {
                Ok(port) if valid && port != 0 => Some(port),
                _ => return Err(UrlError::Port),
            }
        }
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const WEB: [Scheme; 2] = [Scheme::Http, Scheme::Https];

    #[test]
    fn scheme_and_host_are_case_insensitive_and_written_lower_case() {
        let url = Url::parse_base("HTTPS://Voice.Example.COM", &WEB).unwrap();
        assert_eq!(url.as_str(), "https://voice.example.com");
        let url = Url::parse("Wss://Bot.Example.com:8443/Agent?Tenant=ACME").unwrap();
        assert_eq!(url.as_str(), "wss://bot.example.com:8443/Agent?Tenant=ACME");
        assert_eq!(url.path_and_query(), "/Agent?Tenant=ACME");
        assert_eq!(url.port(), Some(8443));
        let url = Url::parse("http://[2001:DB8::1]:80/x").unwrap();
        assert_eq!((url.host(), url.port_or_default()), ("[2001:db8::1]", 80));
    }

    #[test]
    fn base_urls_lose_trailing_slashes_but_not_their_path() {
        let base = |s| Url::parse_base(s, &WEB).map(|u| u.to_string());
        assert_eq!(base("https://x.example/"), Ok("https://x.example".to_owned()));
        assert_eq!(base("HTTP://[::1]:80/a/"), Ok("http://[::1]:80/a".to_owned()));
        assert_eq!(base("https://x.example//"), Ok("https://x.example".to_owned()));
        assert_eq!(base("https://x.example/A/b"), Ok("https://x.example/A/b".to_owned()));
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let cases: &[(&str, UrlError)] = &[
            ("x.example", UrlError::NoScheme),
            ("https://", UrlError::Syntax),
            ("https://a.example?x=1", UrlError::Query),
            ("https://a.example/#f", UrlError::Fragment),
            ("https://a .example", UrlError::Whitespace),
            ("https://a.example\n", UrlError::Whitespace),
            ("https://a.example:99999", UrlError::Port),
            ("https://a.example:0", UrlError::Port),
            ("https://a.example:", UrlError::Port),
            ("https://[::1", UrlError::Syntax),
            ("https://[zz]/x", UrlError::Host),
            ("https://user@a.example", UrlError::UserInfo),
            ("https://u:p@a.example", UrlError::UserInfo),
            ("https://a_b.example", UrlError::Host),
            ("https://a..example", UrlError::Host),
            ("https://-a.example", UrlError::Host),
        ];
        for (text, expected) in cases {
            assert_eq!(Url::parse_base(text, &WEB).as_ref(), Err(expected), "{text}");
        }
        let err = Url::parse_base("ftp://x", &WEB).unwrap_err();
        assert_eq!(err.to_string(), "the URL's scheme is \"ftp\"; it must start with http:// or https://");
        let err = Url::parse_base("wss://x", &WEB).unwrap_err();
        assert_eq!(err.to_string(), "the URL's scheme is \"wss\"; it must start with http:// or https://");
        let long = format!("https://x.example/{}", "a".repeat(MAX_URL_LEN));
        assert!(matches!(Url::parse(&long), Err(UrlError::TooLong { .. })));
    }

    #[test]
    fn websocket_twin_swaps_only_the_scheme() {
        let url = Url::parse("HTTPS://Example.com:8443/p?q=1").unwrap().websocket_twin();
        assert_eq!(url.as_str(), "wss://example.com:8443/p?q=1");
        assert_eq!((url.scheme(), url.host(), url.path_and_query()), (Scheme::Wss, "example.com", "/p?q=1"));
        assert_eq!(url.websocket_twin().as_str(), "https://example.com:8443/p?q=1");
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_normal_forms_are_fixed_points(text in "\\PC{0,40}") {
            if let Ok(url) = Url::parse(&text) {
                prop_assert_eq!(Url::parse(url.as_str()), Ok(url.clone()));
                prop_assert!(url.as_str().len() <= text.len() + 6);
            }
        }

        #[test]
        fn generated_urls_parse_to_their_lower_case_form(
            scheme in prop_oneof![Just("http"), Just("HTTPS"), Just("Ws"), Just("wss")],
            host in "[a-zA-Z]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?(\\.[a-zA-Z][a-zA-Z0-9]{0,10}){0,3}",
            port in proptest::option::of(1u16..),
            path in "(/[a-zA-Z0-9._~-]{0,8}){0,3}",
        ) {
            let port_text = port.map(|p| format!(":{p}")).unwrap_or_default();
            let url = Url::parse(&format!("{scheme}://{host}{port_text}{path}")).unwrap();
            let lower_host = host.to_ascii_lowercase();
            prop_assert_eq!(url.host(), lower_host.as_str());
            prop_assert_eq!(url.port(), port);
            prop_assert_eq!(url.path_and_query(), path.as_str());
            let expected = format!("{}://{lower_host}{port_text}{path}", scheme.to_ascii_lowercase());
            prop_assert_eq!(url.as_str(), expected);
        }
    }
}
