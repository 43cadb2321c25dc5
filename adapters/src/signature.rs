//! `X-Twilio-Signature`: proof that a webhook, status callback or Media
//! Streams handshake came from Twilio, and the same signature for the Twilio
//! simulator to put on the requests it sends.
//!
//! Twilio signs the URL it requested — the public URL it was given, not what a
//! TLS-terminating proxy in front of voxproxy rewrote it to — so a
//! [`SignatureValidator`] is built from the auth token and the configured
//! public base URL, and each call takes the request target (path and query,
//! as in the HTTP request line) and joins the two. A request target from the
//! network is never used as an absolute URL: that would let a request signed
//! for another application of the same account be replayed here.
//!
//! The algorithm ([`compute_signature`]): the full URL, query included, then
//! for a form POST every parameter's name and value, sorted by name then value
//! (byte order, a repeated name contributing each of its values); HMAC-SHA1
//! keyed with the auth token; base64. The checks accept what Twilio's own
//! libraries accept:
//!
//! - [`SignatureValidator::validate_form`]: form POSTs (voice webhook, status
//!   callbacks).
//! - [`SignatureValidator::validate_get`]: GETs sign the URL alone.
//! - [`SignatureValidator::validate_websocket`]: the Media Streams handshake
//!   signs the URL alone, spelled `wss://` or as its `https://` twin (`ws://`
//!   and `http://` likewise).
//! - [`SignatureValidator::validate_json`]: JSON bodies are not part of the
//!   signature; Twilio adds `bodySHA256=<hex SHA-256 of the body>` to the
//!   query, signs the URL, and the body's hash is then compared with it.
//! - In every case the URL matches with its default port (`:443` for
//!   https/wss, `:80` for http/ws) removed or added: the URL as given is tried,
//!   then the other spelling. An explicit non-default port is never touched.
//!
//! Each `validate_*` has a `sign_*` counterpart that produces the signature
//! Twilio would send for the same request.
//!
//! Comparisons are constant time ([`subtle`]): the header is decoded to the
//! 20 HMAC bytes and compared with each candidate's MAC with `ct_eq`, and the
//! results are combined without branching, so the time taken tells an
//! attacker neither how many leading bytes of a forgery were right nor which
//! URL spelling matched. `subtle` is chosen over a hand-written fold because
//! it puts an optimisation barrier on the result, which a plain `|=` fold
//! does not have.
//!
//! ```
//! use voxproxy_adapters::signature::{SignatureError, SignatureValidator};
//!
//! // Twilio's published test vector: auth token `12345`.
//! let validator = SignatureValidator::new("12345", "https://mycompany.com").unwrap();
//! let params = [
//!     ("CallSid", "CA1234567890ABCDE"),
//!     ("Caller", "+14158675309"),
//!     ("Digits", "1234"),
//!     ("From", "+14158675309"),
//!     ("To", "+18005551212"),
//! ];
//! let target = "/myapp.php?foo=1&bar=2";
//! let header = Some("RSOYDt4T1cUTdK1PDd93/VVr8B8=");
//! assert_eq!(validator.validate_form(target, &params, header), Ok(()));
//!
//! // A tampered parameter no longer matches.
//! let mut forged = params;
//! forged[2] = ("Digits", "9999");
//! assert!(matches!(
//!     validator.validate_form(target, &forged, header),
//!     Err(SignatureError::Mismatch { .. })
//! ));
//!
//! // The simulator signs what it sends.
//! let signed = validator.sign_form(target, &params).unwrap();
//! assert_eq!(validator.validate_form(target, &params, Some(&signed)), Ok(()));
//! ```

use core::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::media_stream::base64;
use crate::url::{Scheme, Url, UrlError};

/// Name of the HTTP header that carries the signature.
pub const SIGNATURE_HEADER: &str = "X-Twilio-Signature";

/// Query parameter in which Twilio puts the hex SHA-256 of a JSON body.
pub const BODY_HASH_PARAM: &str = "bodySHA256";

/// Longest URL (public base URL joined with the request target) that is
/// signed or checked, in bytes. Twilio limits webhook URLs to 4,000
/// characters; twice that bounds the hashing an unauthenticated request causes.
pub const MAX_URL_BYTES: usize = 8 * 1024;

/// Length of a base64 HMAC-SHA1: 20 bytes → 28 characters with padding.
const SIGNATURE_CHARS: usize = 28;
const MAC_BYTES: usize = 20;
const SHA256_BYTES: usize = 32;

type HmacSha1 = Hmac<Sha1>;

/// Why a request's signature was not accepted, or a signer could not be set up.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureError {
    /// The request has no `X-Twilio-Signature` header.
    MissingHeader,
    /// The header is not the base64 of a 20-byte HMAC-SHA1.
    MalformedHeader {
        /// Length of the header value that was received, in bytes.
        len: usize,
    },
    /// The signature does not match the request under any accepted spelling
    /// of its URL.
    Mismatch {
        /// The URL the signature was checked against (public base URL joined
        /// with the request target).
        url: String,
    },
    /// A JSON request's URL has no `bodySHA256` query parameter.
    MissingBodyHash,
    /// The `bodySHA256` query parameter is not the hex SHA-256 of the body.
    BodyHashMismatch,
    /// The auth token is empty.
    EmptyAuthToken,
    /// The configured public base URL cannot be signed against.
    InvalidPublicUrl {
        /// The URL as configured (its first 200 characters).
        url: String,
        /// What is wrong with it.
        reason: UrlError,
    },
    /// The request target is not an origin-form path that can be joined to
    /// the public base URL.
    InvalidRequestTarget {
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureError::MissingHeader => {
                write!(
                    f,
                    "request has no {SIGNATURE_HEADER} header, so it cannot be shown to come from Twilio"
                )
            }
            SignatureError::MalformedHeader { len } => write!(
                f,
                "{SIGNATURE_HEADER} header is not a base64 HMAC-SHA1 \
                 ({SIGNATURE_CHARS} characters expected, {len} bytes received)"
            ),
            SignatureError::Mismatch { url } => {
                let shown: String = url.chars().take(200).flat_map(char::escape_debug).collect();
                write!(
                    f,
                    "{SIGNATURE_HEADER} does not match the request signed for {shown} (with and without \
                     the default port): check that the auth token is this account's and that the public \
                     URL is exactly the address configured in Twilio"
                )
            }
            SignatureError::MissingBodyHash => write!(
                f,
                "JSON request URL has no {BODY_HASH_PARAM} query parameter, so its body cannot be checked"
            ),
            SignatureError::BodyHashMismatch => write!(
                f,
                "{BODY_HASH_PARAM} in the URL is not the hex SHA-256 of the request body: \
                 the body was changed after Twilio signed it"
            ),
            SignatureError::EmptyAuthToken => {
                write!(f, "auth token is empty: set it to the Twilio account's auth token")
            }
            SignatureError::InvalidPublicUrl { url, reason } => {
                let shown: String = url.chars().take(200).flat_map(char::escape_debug).collect();
                write!(f, "public URL \"{shown}\" cannot be used to check Twilio signatures: {reason}")
            }
            SignatureError::InvalidRequestTarget { reason } => {
                write!(f, "request target cannot be checked against a Twilio signature: {reason}")
            }
        }
    }
}

impl core::error::Error for SignatureError {}

/// A JSON request signed by [`SignatureValidator::sign_json`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedJson {
    /// The request target to send, with `bodySHA256=…` added to its query.
    pub target: String,
    /// The `X-Twilio-Signature` header value.
    pub signature: String,
}

/// Checks and produces `X-Twilio-Signature` for one auth token and one
/// public base URL. Cheap to share: every call borrows it immutably.
#[derive(Clone)]
pub struct SignatureValidator {
    /// HMAC state after absorbing the key; cloned per signature so the key is
    /// not rehashed on every request.
    keyed: HmacSha1,
    /// The public base URL, normalised ([`Url::parse_base`]).
    base: Url,
    /// Every accepted spelling of the base URL for plain HTTP requests: as
    /// configured, then with the default port added or removed. Computed once
    /// so a request costs no URL parsing, only the MACs.
    http_bases: Vec<String>,
    /// The same for the WebSocket handshake: the HTTP spellings and their
    /// `ws`/`wss` twins.
    websocket_bases: Vec<String>,
}

impl fmt::Debug for SignatureValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignatureValidator")
            .field("auth_token", &"<redacted>")
            .field("public_base_url", &self.base.as_str())
            .finish()
    }
}

impl SignatureValidator {
    /// A validator for `auth_token` and the public URL Twilio is given
    /// (`https://voice.example.com` or `https://example.com/voxproxy`; a
    /// trailing `/` is ignored; scheme and host are case-insensitive and
    /// written lower-case, see [`crate::url`]).
    ///
    /// # Errors
    /// [`SignatureError::EmptyAuthToken`], or
    /// [`SignatureError::InvalidPublicUrl`] when [`Url::parse_base`] refuses
    /// the URL for the schemes `http`, `https`, `ws` and `wss`.
    pub fn new(auth_token: &str, public_base_url: &str) -> Result<Self, SignatureError> {
        let base = Url::parse_base(public_base_url, &Scheme::ALL).map_err(|reason| {
            SignatureError::InvalidPublicUrl { url: public_base_url.chars().take(200).collect(), reason }
        })?;
        let keyed = keyed_mac(auth_token)?;
        let http_bases = spellings(&base);
        let mut websocket_bases = http_bases.clone();
        websocket_bases.extend(spellings(&base.websocket_twin()));
        Ok(SignatureValidator { keyed, base, http_bases, websocket_bases })
    }

    /// The public base URL, normalised and without a trailing `/`.
    #[must_use]
    pub fn public_base_url(&self) -> &str {
        self.base.as_str()
    }

    /// The URL Twilio requested for `target`: the public base URL followed by
    /// the request target.
    ///
    /// # Errors
    /// [`SignatureError::InvalidRequestTarget`] when `target` does not start
    /// with `/`, contains a fragment, spaces or control characters, or makes
    /// the URL longer than [`MAX_URL_BYTES`].
    pub fn request_url(&self, target: &str) -> Result<String, SignatureError> {
        let invalid = |reason| SignatureError::InvalidRequestTarget { reason };
        if !target.starts_with('/') {
            return Err(invalid("it does not start with '/'"));
        }
        let base = self.base.as_str();
        if base.len().saturating_add(target.len()) > MAX_URL_BYTES {
            return Err(invalid("the URL would be longer than 8192 bytes"));
        }
        if target.bytes().any(|b| b.is_ascii_control() || b == b' ' || b == b'#') {
            return Err(invalid("it contains a fragment, spaces or control characters"));
        }
        let mut url = String::with_capacity(base.len() + target.len());
        url.push_str(base);
        url.push_str(target);
        Ok(url)
    }

    /// Checks a form POST (voice webhook, status callback): `params` are the
    /// decoded body fields, in any order; `signature` is the header value.
    ///
    /// # Errors
    /// [`SignatureError::MissingHeader`], [`SignatureError::MalformedHeader`],
    /// [`SignatureError::InvalidRequestTarget`] or
    /// [`SignatureError::Mismatch`].
    pub fn validate_form<N: AsRef<str>, V: AsRef<str>>(
        &self,
        target: &str,
        params: &[(N, V)],
        signature: Option<&str>,
    ) -> Result<(), SignatureError> {
        let received = decode_header(signature)?;
        let url = self.request_url(target)?;
        let params = sorted_params(params);
        self.check(&received, target, url, &params, false)
    }

    /// Checks a GET: the signature covers the URL alone.
    ///
    /// # Errors
    /// As [`SignatureValidator::validate_form`].
    pub fn validate_get(&self, target: &str, signature: Option<&str>) -> Result<(), SignatureError> {
        let received = decode_header(signature)?;
        let url = self.request_url(target)?;
        self.check(&received, target, url, &[], false)
    }

    /// Checks the Media Streams WebSocket handshake: the URL alone, spelled
    /// with `wss://` or `https://` (or `ws://` / `http://`), whichever the
    /// public base URL uses.
    ///
    /// # Errors
    /// As [`SignatureValidator::validate_form`].
    pub fn validate_websocket(&self, target: &str, signature: Option<&str>) -> Result<(), SignatureError> {
        let received = decode_header(signature)?;
        let url = self.request_url(target)?;
        self.check(&received, target, url, &[], true)
    }

    /// Checks a request with a JSON body: `target` carries `bodySHA256` in
    /// its query, the signature covers the URL alone, and the body's SHA-256
    /// must equal that parameter.
    ///
    /// # Errors
    /// [`SignatureError::MissingHeader`], [`SignatureError::MalformedHeader`],
    /// [`SignatureError::InvalidRequestTarget`],
    /// [`SignatureError::MissingBodyHash`], [`SignatureError::Mismatch`] or
    /// [`SignatureError::BodyHashMismatch`], checked in that order.
    pub fn validate_json(
        &self,
        target: &str,
        body: &[u8],
        signature: Option<&str>,
    ) -> Result<(), SignatureError> {
        let received = decode_header(signature)?;
        let url = self.request_url(target)?;
        let claimed = body_hash_param(&url).ok_or(SignatureError::MissingBodyHash)?;
        // The hash is decoded before the signature is checked so the parameter is
        // known to be present; a malformed one can never match any body.
        let claimed = decode_hex_sha256(claimed);
        self.check(&received, target, url, &[], false)?;
        let actual: [u8; SHA256_BYTES] = Sha256::digest(body).into();
        match claimed {
            Some(claimed) if bool::from(claimed.ct_eq(&actual)) => Ok(()),
            _ => Err(SignatureError::BodyHashMismatch),
        }
    }

    /// The signature Twilio would send with a form POST of `params` to `target`.
    ///
    /// # Errors
    /// [`SignatureError::InvalidRequestTarget`].
    pub fn sign_form<N: AsRef<str>, V: AsRef<str>>(
        &self,
        target: &str,
        params: &[(N, V)],
    ) -> Result<String, SignatureError> {
        let url = self.request_url(target)?;
        Ok(base64_text(&self.mac(&[&url], &sorted_params(params))))
    }

    /// The signature Twilio would send with a GET of `target`.
    ///
    /// # Errors
    /// [`SignatureError::InvalidRequestTarget`].
    pub fn sign_get(&self, target: &str) -> Result<String, SignatureError> {
        let url = self.request_url(target)?;
        Ok(base64_text(&self.mac(&[&url], &[])))
    }

    /// The signature Twilio would send with the WebSocket handshake to
    /// `target`: over the `wss://` (or `ws://`) spelling of the URL, as Twilio
    /// connects to the `<Stream url>` from TwiML.
    ///
    /// # Errors
    /// [`SignatureError::InvalidRequestTarget`].
    pub fn sign_websocket(&self, target: &str) -> Result<String, SignatureError> {
        self.request_url(target)?;
        let base = match self.base.scheme() {
            Scheme::Http | Scheme::Https => self.base.websocket_twin(),
            Scheme::Ws | Scheme::Wss => self.base.clone(),
        };
        Ok(base64_text(&self.mac(&[base.as_str(), target], &[])))
    }

    /// Signs a request with a JSON body as Twilio does: adds
    /// `bodySHA256=<hex SHA-256 of body>` to the query of `target`, then signs
    /// that URL alone.
    ///
    /// # Errors
    /// [`SignatureError::InvalidRequestTarget`], also when `target` already
    /// has a `bodySHA256` parameter.
    pub fn sign_json(&self, target: &str, body: &[u8]) -> Result<SignedJson, SignatureError> {
        if self.request_url(target).ok().as_deref().and_then(body_hash_param).is_some() {
            return Err(SignatureError::InvalidRequestTarget {
                reason: "it already has a bodySHA256 parameter",
            });
        }
        let mut signed_target = String::with_capacity(target.len() + BODY_HASH_PARAM.len() + 66);
        signed_target.push_str(target);
        signed_target.push(if target.contains('?') { '&' } else { '?' });
        signed_target.push_str(BODY_HASH_PARAM);
        signed_target.push('=');
        push_hex(&Sha256::digest(body), &mut signed_target);
        let url = self.request_url(&signed_target)?;
        let signature = base64_text(&self.mac(&[&url], &[]));
        Ok(SignedJson { target: signed_target, signature })
    }

    /// Compares `received` with the MAC of `target` after every accepted
    /// spelling of the base URL; `url` is the configured spelling joined
    /// with `target`, for the error.
    fn check(
        &self,
        received: &[u8; MAC_BYTES],
        target: &str,
        url: String,
        params: &[(&str, &str)],
        websocket: bool,
    ) -> Result<(), SignatureError> {
        let bases = if websocket { &self.websocket_bases } else { &self.http_bases };
        // Every spelling is tried and the results OR-ed, so timing does not
        // reveal which one matched.
        let mut matched = Choice::from(0);
        for base in bases {
            matched |= self.mac(&[base, target], params).ct_eq(received);
        }
        if bool::from(matched) { Ok(()) } else { Err(SignatureError::Mismatch { url }) }
    }

    /// The MAC of the concatenated `url_parts` followed by the parameters.
    fn mac(&self, url_parts: &[&str], sorted_params: &[(&str, &str)]) -> [u8; MAC_BYTES] {
        let mut mac = self.keyed.clone();
        for part in url_parts {
            mac.update(part.as_bytes());
        }
        for (name, value) in sorted_params {
            mac.update(name.as_bytes());
            mac.update(value.as_bytes());
        }
        mac.finalize().into_bytes().into()
    }
}

/// The spellings of `base` Twilio's libraries accept: as given, then with
/// the scheme's default port removed (when given) or added (when absent).
/// An explicit non-default port has one spelling only.
fn spellings(base: &Url) -> Vec<String> {
    let mut out = vec![base.as_str().to_owned()];
    let default = base.scheme().default_port();
    let twin_port = match base.port() {
        None => Some(format!(":{default}")),
        Some(port) if port == default => Some(String::new()),
        Some(_) => None,
    };
    if let Some(port) = twin_port {
        out.push(format!("{}://{}{port}{}", base.scheme(), base.host(), base.path_and_query()));
    }
    out
}

/// Twilio's signature of `url` and form `params` (empty for a GET or a JSON
/// body), for one spelling of the URL exactly as given: base64 of the
/// HMAC-SHA1, keyed with `auth_token`, of the URL followed by each
/// parameter's name and value, sorted by name then value in byte order.
///
/// Prefer [`SignatureValidator`], which joins the request target to the
/// configured public URL and accepts the spellings Twilio may have used.
///
/// # Errors
/// [`SignatureError::EmptyAuthToken`].
pub fn compute_signature<N: AsRef<str>, V: AsRef<str>>(
    auth_token: &str,
    url: &str,
    params: &[(N, V)],
) -> Result<String, SignatureError> {
    let mut mac = keyed_mac(auth_token)?;
    mac.update(url.as_bytes());
    for (name, value) in sorted_params(params) {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    Ok(base64_text(&mac.finalize().into_bytes()))
}

fn keyed_mac(auth_token: &str) -> Result<HmacSha1, SignatureError> {
    if auth_token.is_empty() {
        return Err(SignatureError::EmptyAuthToken);
    }
    // HMAC takes keys of any length, so `new_from_slice` cannot fail here; the
    // only key we refuse is the empty one, above.
    HmacSha1::new_from_slice(auth_token.as_bytes()).map_err(|_| SignatureError::EmptyAuthToken)
}

fn sorted_params<N: AsRef<str>, V: AsRef<str>>(params: &[(N, V)]) -> Vec<(&str, &str)> {
    let mut sorted: Vec<(&str, &str)> = params.iter().map(|(n, v)| (n.as_ref(), v.as_ref())).collect();
    // `str` orders by bytes, which is the order Twilio signs in; equal names
    // are then ordered by value.
    sorted.sort_unstable();
    sorted
}

/// Standard base64 with padding, as Twilio writes signatures.
fn base64_text(bytes: &[u8]) -> String {
    let mut text = Vec::with_capacity(SIGNATURE_CHARS);
    base64::encode_append(bytes, &mut text);
    // The base64 alphabet is ASCII.
    text.into_iter().map(char::from).collect()
}

fn decode_header(signature: Option<&str>) -> Result<[u8; MAC_BYTES], SignatureError> {
    let header = signature.ok_or(SignatureError::MissingHeader)?;
    let trimmed = header.trim_matches([' ', '\t']);
    let malformed = SignatureError::MalformedHeader { len: header.len() };
    if trimmed.len() != SIGNATURE_CHARS {
        return Err(malformed);
    }
    // 28 base64 characters can never decode to more than 21 bytes.
    let mut decoded = [0u8; 21];
    match base64::decode(trimmed.as_bytes(), &mut decoded) {
        Ok(MAC_BYTES) => {
            let mut mac = [0u8; MAC_BYTES];
            mac.copy_from_slice(&decoded[..MAC_BYTES]);
            Ok(mac)
        }
        _ => Err(malformed),
    }
}

/// The raw value of the first `bodySHA256` parameter in `url`'s query.
fn body_hash_param(url: &str) -> Option<&str> {
    let (_, query) = url.split_once('?')?;
    let query = query.split('#').next().unwrap_or_default();
    query.split('&').find_map(|pair| pair.strip_prefix(BODY_HASH_PARAM)?.strip_prefix('='))
}

fn decode_hex_sha256(hex: &str) -> Option<[u8; SHA256_BYTES]> {
    let digits = hex.as_bytes();
    if digits.len() != SHA256_BYTES * 2 {
        return None;
    }
    let mut out = [0u8; SHA256_BYTES];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        *byte = u8::try_from(hi << 4 | lo).ok()?;
    }
    Some(out)
}

fn push_hex(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Expected signatures below that are not from twilio.md were computed
    // independently of this code, with Python's standard library:
    //   s = url + "".join(n + v for n, v in sorted(params))
    //   base64.b64encode(hmac.new(token.encode(), s.encode(), hashlib.sha1).digest())
    // and for JSON bodies hashlib.sha256(body).hexdigest().
    const TOKEN: &str = "12345";

    const TWILIO_PARAMS: [(&str, &str); 5] = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675309"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ];
    const SHORT_PARAMS: [(&str, &str); 2] = [("CallSid", "CA1234567890ABCDE"), ("To", "+18005551212")];

    fn validator(base: &str) -> SignatureValidator {
        SignatureValidator::new(TOKEN, base).unwrap()
    }

    fn is_mismatch(result: &Result<(), SignatureError>) -> bool {
        matches!(result, Err(SignatureError::Mismatch { .. }))
    }

    #[test]
    fn twilio_md_vectors() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(compute_signature(TOKEN, url, &TWILIO_PARAMS).unwrap(), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
        let url = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        assert_eq!(compute_signature(TOKEN, url, &TWILIO_PARAMS).unwrap(), "kvajT1Ptam85bY51eRf/AJRuM3w=");

        let target = "/myapp.php?foo=1&bar=2";
        let plain = validator("https://mycompany.com");
        assert_eq!(plain.validate_form(target, &TWILIO_PARAMS, Some("RSOYDt4T1cUTdK1PDd93/VVr8B8=")), Ok(()));
        assert_eq!(plain.sign_form(target, &TWILIO_PARAMS).unwrap(), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
        let with_port = validator("https://mycompany.com:443");
        assert_eq!(
            with_port.validate_form(target, &TWILIO_PARAMS, Some("kvajT1Ptam85bY51eRf/AJRuM3w=")),
            Ok(())
        );
        assert_eq!(with_port.sign_form(target, &TWILIO_PARAMS).unwrap(), "kvajT1Ptam85bY51eRf/AJRuM3w=");
    }

    #[test]
    fn param_order_in_the_body_does_not_matter() {
        let mut shuffled = TWILIO_PARAMS;
        shuffled.reverse();
        shuffled.swap(1, 3);
        let v = validator("https://mycompany.com");
        assert_eq!(
            v.validate_form("/myapp.php?foo=1&bar=2", &shuffled, Some("RSOYDt4T1cUTdK1PDd93/VVr8B8=")),
            Ok(())
        );
    }

    #[test]
    fn https_default_port_added_or_removed() {
        let target = "/myapp.php?foo=1&bar=2";
        // Configured without the port, Twilio signed with it...
        let plain = validator("https://mycompany.com");
        assert_eq!(plain.validate_form(target, &TWILIO_PARAMS, Some("kvajT1Ptam85bY51eRf/AJRuM3w=")), Ok(()));
        // ...and configured with it, Twilio signed without.
        let with_port = validator("https://mycompany.com:443");
        assert_eq!(
            with_port.validate_form(target, &TWILIO_PARAMS, Some("RSOYDt4T1cUTdK1PDd93/VVr8B8=")),
            Ok(())
        );
    }

    #[test]
    fn http_default_port_added_or_removed() {
        let signed_with_80 = Some("NaqV/Le9pIussuZUNoweNfjzSCY=");
        let signed_without = Some("zJqvWIPSmYa075Z6YesBbgytSC0=");
        for base in ["http://example.com", "http://example.com:80"] {
            let v = validator(base);
            assert_eq!(v.validate_form("/twilio/voice", &SHORT_PARAMS, signed_with_80), Ok(()), "{base}");
            assert_eq!(v.validate_form("/twilio/voice", &SHORT_PARAMS, signed_without), Ok(()), "{base}");
        }
        assert_eq!(
            spellings(&Url::parse("http://example.com:080/x").unwrap()),
            ["http://example.com:80/x", "http://example.com/x"]
        );
        // :443 is not http's default, so an https-style port is not stripped.
        let v = validator("http://example.com:443");
        assert!(is_mismatch(&v.validate_form("/twilio/voice", &SHORT_PARAMS, signed_without)));
    }

    #[test]
    fn explicit_non_default_port_is_never_dropped_or_swapped() {
        let v = validator("https://example.com:8443");
        assert_eq!(
            v.validate_form("/twilio/voice", &SHORT_PARAMS, Some("LdJWW4rRdECXdVIEw5G1U/nSP3I=")),
            Ok(())
        );
        // Signed for the URL without any port: that is a different URL.
        assert!(is_mismatch(&v.validate_form(
            "/twilio/voice",
            &SHORT_PARAMS,
            Some("EZTr9QUAysdXn92ujaVDwNA5vGQ=")
        )));
        assert_eq!(
            spellings(&Url::parse("https://example.com:8443/x").unwrap()),
            ["https://example.com:8443/x"]
        );
    }

    #[test]
    fn default_port_spellings_with_ipv6_and_upper_case() {
        let spelled = |base: &str| spellings(&Url::parse(base).unwrap());
        assert_eq!(spelled("ws://[2001:db8::1]/m"), ["ws://[2001:db8::1]/m", "ws://[2001:db8::1]:80/m"]);
        assert_eq!(spelled("wss://[::1]:443"), ["wss://[::1]:443", "wss://[::1]"]);
        assert_eq!(spelled("https://[::1]:8443/x"), ["https://[::1]:8443/x"]);
        // Scheme and host compare case-insensitively and are signed lower-case.
        assert_eq!(spelled("HTTPS://Example.com/X"), ["https://example.com/X", "https://example.com:443/X"]);

        let v = validator("http://[2001:db8::1]");
        assert_eq!(
            v.validate_form("/twilio/voice", &SHORT_PARAMS, Some("8pz7leE416VrXejG0x//7RayD5Q=")),
            Ok(())
        );
    }

    #[test]
    fn upper_case_public_url_checks_the_twilio_md_vectors() {
        // Issue 9 item 8: `HTTPS://…` was refused by one validator and
        // accepted by another; now it is one URL, normalised.
        let target = "/myapp.php?foo=1&bar=2";
        for base in ["HTTPS://MyCompany.com", "Https://MYCOMPANY.COM/", "HTTPS://mycompany.com:443"] {
            let v = validator(base);
            assert_eq!(v.public_base_url().to_ascii_lowercase(), v.public_base_url(), "{base}");
            for sig in ["RSOYDt4T1cUTdK1PDd93/VVr8B8=", "kvajT1Ptam85bY51eRf/AJRuM3w="] {
                assert_eq!(v.validate_form(target, &TWILIO_PARAMS, Some(sig)), Ok(()), "{base} {sig}");
            }
        }
        assert_eq!(
            validator("HTTPS://MyCompany.com").sign_form(target, &TWILIO_PARAMS).unwrap(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
    }

    #[test]
    fn repeated_params_contribute_each_value_sorted() {
        let params = [
            ("To", "+14155550100"),
            ("StatusCallbackEvent", "ringing"),
            ("From", "+14155550199"),
            ("StatusCallbackEvent", "answered"),
            ("StatusCallbackEvent", "completed"),
        ];
        let v = validator("https://example.com");
        assert_eq!(v.validate_form("/twilio/status", &params, Some("x60FJ0Mos+ynxMEkwNROCUSXWE0=")), Ok(()));
        // Dropping one of the repeated values breaks it.
        assert!(is_mismatch(&v.validate_form(
            "/twilio/status",
            &params[..4],
            Some("x60FJ0Mos+ynxMEkwNROCUSXWE0=")
        )));
    }

    #[test]
    fn empty_params_sign_the_url_alone() {
        let v = validator("https://mycompany.com");
        let target = "/myapp.php?foo=1&bar=2";
        let no_params: [(&str, &str); 0] = [];
        assert_eq!(v.validate_form(target, &no_params, Some("zYQTYrRWXE7LtzbG4PfP7/bkkGo=")), Ok(()));
        assert_eq!(v.validate_get(target, Some("zYQTYrRWXE7LtzbG4PfP7/bkkGo=")), Ok(()));
        assert_eq!(v.sign_get(target).unwrap(), "zYQTYrRWXE7LtzbG4PfP7/bkkGo=");
        assert!(is_mismatch(&v.validate_get(target, Some("RSOYDt4T1cUTdK1PDd93/VVr8B8="))));
    }

    #[test]
    fn websocket_accepts_wss_and_https_twins() {
        let wss = Some("Ko8aymfVk0cCegaxVKH0ZCvSyf4=");
        let wss_443 = Some("JPl6eMv6/FLIiyGOYMMOKCyoU3s=");
        let https = Some("NdyWwOAnZvB7daRjuJMnoAC/cO8=");
        for base in ["https://example.com", "wss://example.com", "https://example.com:443/"] {
            let v = validator(base);
            for sig in [wss, wss_443, https] {
                assert_eq!(v.validate_websocket("/twilio/media", sig), Ok(()), "{base} {sig:?}");
            }
        }
        let v = validator("https://example.com");
        assert_eq!(v.sign_websocket("/twilio/media").unwrap(), "Ko8aymfVk0cCegaxVKH0ZCvSyf4=");
        // A GET is the URL as given: the wss spelling is not accepted there.
        assert!(is_mismatch(&v.validate_get("/twilio/media", wss)));
        // Plain http bases pair with ws, not wss.
        let v = validator("http://example.com");
        assert!(is_mismatch(&v.validate_websocket("/twilio/media", wss)));
    }

    #[test]
    fn json_body_hash_flow() {
        let body = br#"{"CallSid":"CA123","Status":"completed"}"#;
        let hash = "5d32534f33f1a2d4ced73fab1f48e7b50b670e1018d048bc8c6c6370af16aabd";
        let v = validator("https://example.com");
        let target = format!("/twilio/json?bodySHA256={hash}");
        let sig = Some("2DD/NMTVY8t0qRfWk8N0RUzi7+s=");
        assert_eq!(v.validate_json(&target, body, sig), Ok(()));
        // Upper-case hex is the same hash, but part of the signed URL, so it no longer matches.
        let upper = format!("/twilio/json?bodySHA256={}", hash.to_ascii_uppercase());
        assert!(is_mismatch(&v.validate_json(&upper, body, sig)));

        let signed = v.sign_json("/twilio/json", body).unwrap();
        assert_eq!(
            signed,
            SignedJson { target: target.clone(), signature: "2DD/NMTVY8t0qRfWk8N0RUzi7+s=".into() }
        );
        let signed = v.sign_json("/twilio/json?x=1", body).unwrap();
        assert_eq!(signed.target, format!("/twilio/json?x=1&bodySHA256={hash}"));
        assert_eq!(signed.signature, "VDMW/kG0+NkLwUT9FnhyTkfgo54=");

        let tampered = br#"{"CallSid":"CA123","Status":"failed"}"#;
        assert_eq!(v.validate_json(&target, tampered, sig), Err(SignatureError::BodyHashMismatch));
        assert_eq!(v.validate_json("/twilio/json", body, sig), Err(SignatureError::MissingBodyHash));
        assert_eq!(
            v.validate_json("/twilio/json?bodySHA256x=1", body, sig),
            Err(SignatureError::MissingBodyHash)
        );
        assert!(v.sign_json(&target, body).is_err(), "a second bodySHA256 is refused");
        // A correctly signed URL whose bodySHA256 is not hex can never match.
        let junk = "/twilio/json?bodySHA256=zz";
        let junk_sig = v.sign_get(junk).unwrap();
        assert_eq!(v.validate_json(junk, body, Some(&junk_sig)), Err(SignatureError::BodyHashMismatch));
    }

    #[test]
    fn wrong_token_and_tampered_param_fail() {
        let target = "/myapp.php?foo=1&bar=2";
        let other = SignatureValidator::new("54321", "https://mycompany.com").unwrap();
        assert!(is_mismatch(&other.validate_form(
            target,
            &TWILIO_PARAMS,
            Some("RSOYDt4T1cUTdK1PDd93/VVr8B8=")
        )));

        let v = validator("https://mycompany.com");
        let mut tampered = TWILIO_PARAMS;
        tampered[4] = ("To", "+18005551213");
        assert!(is_mismatch(&v.validate_form(target, &tampered, Some("RSOYDt4T1cUTdK1PDd93/VVr8B8="))));
        let mut extra = TWILIO_PARAMS.to_vec();
        extra.push(("Digits", "9"));
        assert!(is_mismatch(&v.validate_form(target, &extra, Some("RSOYDt4T1cUTdK1PDd93/VVr8B8="))));
        assert!(is_mismatch(&v.validate_form(
            "/myapp.php?foo=1&bar=3",
            &TWILIO_PARAMS,
            Some("RSOYDt4T1cUTdK1PDd93/VVr8B8=")
        )));
    }

    #[test]
    fn header_presence_and_shape() {
        let v = validator("https://mycompany.com");
        let target = "/myapp.php?foo=1&bar=2";
        assert_eq!(v.validate_form(target, &TWILIO_PARAMS, None), Err(SignatureError::MissingHeader));
        assert_eq!(v.validate_get(target, Some("")), Err(SignatureError::MalformedHeader { len: 0 }));
        assert_eq!(v.validate_get(target, Some("abc")), Err(SignatureError::MalformedHeader { len: 3 }));
        // 28 characters, but not base64.
        assert_eq!(
            v.validate_get(target, Some("RSOYDt4T1cUTdK1PDd93/VVr8B8!")),
            Err(SignatureError::MalformedHeader { len: 28 })
        );
        // Non-canonical trailing bits would be a second spelling of the same MAC.
        assert_eq!(
            v.validate_get(target, Some("RSOYDt4T1cUTdK1PDd93/VVr8B9=")),
            Err(SignatureError::MalformedHeader { len: 28 })
        );
        // Surrounding blanks left by a lenient HTTP parser are tolerated.
        assert_eq!(v.validate_form(target, &TWILIO_PARAMS, Some(" RSOYDt4T1cUTdK1PDd93/VVr8B8=\t")), Ok(()));
    }

    #[test]
    fn config_and_target_errors() {
        assert_eq!(
            SignatureValidator::new("", "https://a.example").unwrap_err(),
            SignatureError::EmptyAuthToken
        );
        for bad in [
            "a.example",
            "ftp://a.example",
            "https://",
            "https://a.example?x=1",
            "https://a.example/#f",
            "https://a .example",
            "https://a.example:99999",
            "https://a.example:",
            "https://[::1",
            "https://user@",
            "https://user@a.example",
            "https://a.example:0",
        ] {
            assert!(
                matches!(SignatureValidator::new(TOKEN, bad), Err(SignatureError::InvalidPublicUrl { .. })),
                "{bad}"
            );
        }
        let v = validator("https://example.com/prefix/");
        assert_eq!(v.public_base_url(), "https://example.com/prefix");
        assert_eq!(
            v.request_url("/twilio/voice?x=1").unwrap(),
            "https://example.com/prefix/twilio/voice?x=1"
        );
        for bad in ["twilio/voice", "https://evil.example/twilio/voice", "/a#b", "/a b", "/a\r\n"] {
            assert!(matches!(v.request_url(bad), Err(SignatureError::InvalidRequestTarget { .. })), "{bad}");
        }
        let long = format!("/{}", "a".repeat(MAX_URL_BYTES));
        assert!(matches!(v.sign_get(&long), Err(SignatureError::InvalidRequestTarget { .. })));
    }

    #[test]
    fn messages_never_reveal_secrets() {
        let v = validator("https://mycompany.com");
        let err = v
            .validate_form("/myapp.php?foo=1&bar=2", &TWILIO_PARAMS, Some("AAAAAAAAAAAAAAAAAAAAAAAAAAA="))
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("https://mycompany.com/myapp.php?foo=1&bar=2"), "{msg}");
        assert!(!msg.contains("RSOYDt4T1cUTdK1PDd93/VVr8B8=") && !msg.contains(TOKEN), "{msg}");
        let debug = format!("{v:?}");
        assert!(!debug.contains(TOKEN) && debug.contains("redacted"), "{debug}");
        assert!(SignatureError::MalformedHeader { len: 5 }.to_string().contains("28 characters expected"));
    }

    proptest! {
        #[test]
        fn sign_then_validate_round_trips(
            path in "/[a-zA-Z0-9/._~%-]{0,30}(\\?[a-zA-Z0-9=&%]{0,20})?",
            params in proptest::collection::vec(("\\PC{0,8}", "\\PC{0,12}"), 0..8),
            base in prop_oneof![
                Just("https://example.com"), Just("https://example.com:443"), Just("http://[::1]:8080"),
                Just("http://10.0.0.1"), Just("wss://example.com/base"), Just("HTTPS://Example.COM")
            ],
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let v = validator(base);
            let sig = v.sign_form(&path, &params).unwrap();
            prop_assert_eq!(v.validate_form(&path, &params, Some(&sig)), Ok(()));
            let sig = v.sign_get(&path).unwrap();
            prop_assert_eq!(v.validate_get(&path, Some(&sig)), Ok(()));
            let sig = v.sign_websocket(&path).unwrap();
            prop_assert_eq!(v.validate_websocket(&path, Some(&sig)), Ok(()));
            if let Ok(signed) = v.sign_json(&path, &body) {
                prop_assert_eq!(v.validate_json(&signed.target, &body, Some(&signed.signature)), Ok(()));
            }
        }
    }
}
