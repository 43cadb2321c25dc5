//! Digest authentication for SIP (RFC 3261 §22, RFC 8760, RFC 7616):
//! answering a 401 `WWW-Authenticate` or 407 `Proxy-Authenticate`
//! challenge with MD5 or SHA-256 (and their `-sess` forms), `qop=auth`
//! with `nc`/`cnonce`, or the RFC 2069 form when no qop is offered.

use core::fmt::Write as _;

use md5::Md5;
use sha2::{Digest, Sha256};

use super::message::split_list;
use super::{Message, SipError};

/// Longest challenge parameter value accepted.
const MAX_PARAM_BYTES: usize = 512;

/// A digest hash algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `MD5` (the default when none is named).
    Md5,
    /// `MD5-sess`.
    Md5Sess,
    /// `SHA-256`.
    Sha256,
    /// `SHA-256-sess`.
    Sha256Sess,
}

impl Algorithm {
    fn from_name(name: &str) -> Option<Self> {
        [Self::Md5, Self::Md5Sess, Self::Sha256, Self::Sha256Sess]
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    /// The name as written in the header.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Md5Sess => "MD5-sess",
            Self::Sha256 => "SHA-256",
            Self::Sha256Sess => "SHA-256-sess",
        }
    }

    fn strength(self) -> u8 {
        match self {
            Self::Md5 | Self::Md5Sess => 0,
            Self::Sha256 | Self::Sha256Sess => 1,
        }
    }

    fn is_sess(self) -> bool {
        matches!(self, Self::Md5Sess | Self::Sha256Sess)
    }

    /// Lower-case hex of the hash of `parts` joined by `:`.
    fn hex(self, parts: &[&str]) -> String {
        fn run<D: Digest>(parts: &[&str]) -> String {
            let mut hasher = D::new();
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    hasher.update(b":");
                }
                hasher.update(part.as_bytes());
            }
            hasher.finalize().iter().fold(String::with_capacity(64), |mut out, b| {
                // Writing to a String cannot fail.
                let _ = write!(out, "{b:02x}");
                out
            })
        }
        match self {
            Self::Md5 | Self::Md5Sess => run::<Md5>(parts),
            Self::Sha256 | Self::Sha256Sess => run::<Sha256>(parts),
        }
    }
}

/// A parsed `Digest` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The protection space.
    pub realm: String,
    /// The server's nonce.
    pub nonce: String,
    /// Echoed back unchanged.
    pub opaque: Option<String>,
    /// The hash.
    pub algorithm: Algorithm,
    /// Whether `qop=auth` was offered (used when it is).
    pub qop_auth: bool,
    /// `stale=true`: the nonce expired, the password was right.
    pub stale: bool,
}

impl Challenge {
    /// Parses one `WWW-Authenticate`/`Proxy-Authenticate` value.
    pub fn parse(value: &str) -> Result<Self, SipError> {
        let bad = |reason| SipError::BadChallenge { reason };
        let (scheme, params) = value.trim().split_once([' ', '\t']).ok_or(bad("no parameters"))?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(bad("scheme is not Digest"));
        }
        let (mut realm, mut nonce, mut opaque, mut algorithm, mut qop_auth, mut stale) =
            (None, None, None, Algorithm::Md5, false, false);
        for item in split_list(params) {
            let (name, raw) = item.split_once('=').ok_or(bad("parameter without `=`"))?;
            let value = unquote(raw.trim()).ok_or(bad("badly quoted parameter"))?;
            if value.len() > MAX_PARAM_BYTES {
                return Err(bad("parameter longer than 512 bytes"));
            }
            match name.trim().to_ascii_lowercase().as_str() {
                "realm" => realm = Some(value),
                "nonce" => nonce = Some(value),
                "opaque" => opaque = Some(value),
                "algorithm" => {
                    algorithm = Algorithm::from_name(&value).ok_or(bad("unsupported algorithm"))?
                }
                "qop" => qop_auth = value.split(',').any(|q| q.trim().eq_ignore_ascii_case("auth")),
                "stale" => stale = value.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        Ok(Self {
            realm: realm.ok_or(bad("no realm"))?,
            nonce: nonce.filter(|n| !n.is_empty()).ok_or(bad("no nonce"))?,
            opaque,
            algorithm,
            qop_auth,
            stale,
        })
    }

    /// The strongest usable challenge of a 401 or 407 response, and the
    /// header the answer goes in (`Authorization` or `Proxy-Authorization`).
    pub fn pick(response: &Message) -> Result<(Self, &'static str), SipError> {
        let (challenge_header, answer_header) = match response.status() {
            Some(407) => ("Proxy-Authenticate", "Proxy-Authorization"),
            _ => ("WWW-Authenticate", "Authorization"),
        };
        response
            .header_values(challenge_header)
            .filter_map(|v| Self::parse(v).ok())
            .max_by_key(|c| c.algorithm.strength())
            .map(|c| (c, answer_header))
            .ok_or(SipError::BadChallenge { reason: "no usable Digest challenge in the response" })
    }

    /// The `Authorization` value answering this challenge for `method` on
    /// `uri`, as request number `nc` with client nonce `cnonce`.
    #[must_use]
    pub fn answer(
        &self,
        credentials: &Credentials,
        method: &str,
        uri: &str,
        cnonce: &str,
        nc: u32,
    ) -> String {
        let algorithm = self.algorithm;
        let mut ha1 = algorithm.hex(&[&credentials.username, &self.realm, &credentials.password]);
        if algorithm.is_sess() {
            ha1 = algorithm.hex(&[&ha1, &self.nonce, cnonce]);
        }
        let ha2 = algorithm.hex(&[method, uri]);
        let nc_text = format!("{nc:08x}");
        let response = if self.qop_auth {
            algorithm.hex(&[&ha1, &self.nonce, &nc_text, cnonce, "auth", &ha2])
        } else {
            algorithm.hex(&[&ha1, &self.nonce, &ha2])
        };
        let mut out = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", algorithm={}",
            quote(&credentials.username),
            quote(&self.realm),
            quote(&self.nonce),
            algorithm.name()
        );
        if self.qop_auth {
            let _ = write!(out, ", qop=auth, nc={nc_text}, cnonce=\"{}\"", quote(cnonce));
        }
        if let Some(opaque) = &self.opaque {
            let _ = write!(out, ", opaque=\"{}\"", quote(opaque));
        }
        out
    }
}

/// A user name and password for digest authentication.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password (never printed by `Debug`).
    pub password: String,
}

impl core::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

fn unquote(text: &str) -> Option<String> {
    let Some(inner) = text.strip_prefix('"') else { return Some(text.to_owned()) };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

fn quote(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .flat_map(|c| if c == '"' || c == '\\' { vec!['\\', c] } else { vec![c] })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mufasa() -> Credentials {
        Credentials { username: "Mufasa".into(), password: "Circle of Life".into() }
    }

    fn response_of(header: &str) -> &str {
        let start = header.find("response=\"").unwrap() + 10;
        &header[start..start + header[start..].find('"').unwrap()]
    }

    /// RFC 7616 §3.9.1: the same request answered with SHA-256 and MD5.
    #[test]
    fn rfc7616_vectors() {
        let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        for (algorithm, expected) in [
            ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
            ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ] {
            let challenge = Challenge::parse(&format!(
                "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm={algorithm}, \
                 nonce=\"{nonce}\", opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""
            ))
            .unwrap();
            let header = challenge.answer(&mufasa(), "GET", "/dir/index.html", cnonce, 1);
            assert_eq!(response_of(&header), expected, "{algorithm}");
            assert!(header.contains("nc=00000001") && header.contains("qop=auth"), "{header}");
            assert!(header.contains("opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""));
        }
    }

    /// RFC 2617 §3.5 (whose password is spelt "Circle Of Life").
    #[test]
    fn rfc2617_vector() {
        let creds = Credentials { username: "Mufasa".into(), password: "Circle Of Life".into() };
        let challenge = Challenge::parse(
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .unwrap();
        assert_eq!(challenge.algorithm, Algorithm::Md5);
        let header = challenge.answer(&creds, "GET", "/dir/index.html", "0a4f113b", 1);
        assert_eq!(response_of(&header), "6629fae49393a05397450978507c4ef1");
    }

    /// Without qop (RFC 2069 form), checked against Python's hashlib:
    /// md5(md5("alice:asterisk:secret") + ":abc:" + md5("INVITE:sip:bob@10.0.0.1")).
    #[test]
    fn without_qop() {
        let challenge = Challenge::parse("Digest realm=\"asterisk\",nonce=\"abc\"").unwrap();
        let creds = Credentials { username: "alice".into(), password: "secret".into() };
        let header = challenge.answer(&creds, "INVITE", "sip:bob@10.0.0.1", "ignored", 1);
        assert_eq!(response_of(&header), "7b344cec6d51f5fb0580435602e81686");
        assert!(!header.contains("qop"));
    }

    #[test]
    fn picks_the_strongest_and_refuses_junk() {
        let response = Message::response(407)
            .with("Proxy-Authenticate", "Digest realm=\"r\", nonce=\"n\", algorithm=MD5")
            .with("Proxy-Authenticate", "Digest realm=\"r\", nonce=\"n\", algorithm=SHA-256")
            .with("Proxy-Authenticate", "Digest realm=\"r\", nonce=\"n\", algorithm=SHA-512-256");
        let (challenge, header) = Challenge::pick(&response).unwrap();
        assert_eq!((challenge.algorithm, header), (Algorithm::Sha256, "Proxy-Authorization"));
        for bad in [
            "Basic realm=\"r\"",
            "Digest",
            "Digest nonce=\"n\"",
            "Digest realm=\"r\"",
            "Digest realm=\"r, nonce=\"n\"",
            "Digest realm=r, nonce=n, algorithm=SHA-1",
        ] {
            assert!(Challenge::parse(bad).is_err(), "{bad}");
        }
        assert!(Challenge::pick(&Message::response(401)).is_err());
        let long = format!("Digest realm=\"{}\", nonce=n", "r".repeat(600));
        assert!(Challenge::parse(&long).is_err());
    }

    #[test]
    fn quotes_what_it_echoes_and_hides_the_password() {
        let challenge = Challenge::parse(r#"Digest realm="a\"b", nonce="n""#).unwrap();
        assert_eq!(challenge.realm, "a\"b");
        let header = challenge.answer(&mufasa(), "BYE", "sip:x@h", "c", 2);
        assert!(header.contains(r#"realm="a\"b""#), "{header}");
        assert!(!format!("{:?}", mufasa()).contains("Circle"));
    }
}
