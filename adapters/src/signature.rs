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
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
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
    base_url: String,
}

impl fmt::Debug for SignatureValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignatureValidator")
            .field("auth_token", &"<redacted>")
            .field("public_base_url", &self.base_url)
            .finish()
    }
}

impl SignatureValidator {
    /// A validator for `auth_token` and the public URL Twilio is given
    /// (`https://voice.example.com` or `https://example.com/voxproxy`; a
    /// trailing `/` is ignored).
    ///
    /// # Errors
    /// [`SignatureError::EmptyAuthToken`], or
    /// [`SignatureError::InvalidPublicUrl`] when the URL is not
    /// `http`/`https`/`ws`/`wss` with a host, or has a query, a fragment,
    /// spaces or control characters.
    pub fn new(auth_token: &str, public_base_url: &str) -> Result<Self, SignatureError> {
        let invalid = |reason| SignatureError::InvalidPublicUrl { url: public_base_url.to_owned(), reason };
        if public_base_url.len() > MAX_URL_BYTES / 2 {
            return Err(invalid("it is longer than 4096 bytes"));
        }
        if public_base_url.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(invalid("it contains spaces or control characters"));
        }
        if public_base_url.contains(['?', '#']) {
            return Err(invalid("it has a query or fragment; give the scheme, host and optional path only"));
        }
        let Some((scheme, rest)) = public_base_url.split_once("://") else {
            return Err(invalid("it does not start with http://, https://, ws:// or wss://"));
        };
        if default_port(scheme).is_none() {
            return Err(invalid("its scheme is not http, https, ws or wss"));
        }
        let authority = rest.split('/').next().unwrap_or_default();
        if split_authority(authority).is_none_or(|parts| parts.host.is_empty()) {
            return Err(invalid("it has no host, or a malformed host or port"));
        }
        if split_authority(authority)
            .and_then(|parts| parts.port)
            .is_some_and(|port| parse_port(port).is_none())
        {
            return Err(invalid("its port is not a number from 0 to 65535"));
        }
        let keyed = keyed_mac(auth_token)?;
        Ok(SignatureValidator { keyed, base_url: public_base_url.trim_end_matches('/').to_owned() })
    }

    /// The public base URL, without a trailing `/`.
    #[must_use]
    pub fn public_base_url(&self) -> &str {
        &self.base_url
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
        if self.base_url.len().saturating_add(target.len()) > MAX_URL_BYTES {
            return Err(invalid("the URL would be longer than 8192 bytes"));
        }
        if target.bytes().any(|b| b.is_ascii_control() || b == b' ' || b == b'#') {
            return Err(invalid("it contains a fragment, spaces or control characters"));
        }
        let mut url = String::with_capacity(self.base_url.len() + target.len());
        url.push_str(&self.base_url);
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
        self.check(&received, url, &params, false)
    }

    /// Checks a GET: the signature covers the URL alone.
    ///
    /// # Errors
    /// As [`SignatureValidator::validate_form`].
    pub fn validate_get(&self, target: &str, signature: Option<&str>) -> Result<(), SignatureError> {
        let received = decode_header(signature)?;
        let url = self.request_url(target)?;
        self.check(&received, url, &[], false)
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
        self.check(&received, url, &[], true)
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
        self.check(&received, url, &[], false)?;
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
        Ok(base64_text(&self.mac(&url, &sorted_params(params))))
    }

    /// The signature Twilio would send with a GET of `target`.
    ///
    /// # Errors
    /// [`SignatureError::InvalidRequestTarget`].
    pub fn sign_get(&self, target: &str) -> Result<String, SignatureError> {
        let url = self.request_url(target)?;
        Ok(base64_text(&self.mac(&url, &[])))
    }

    /// The signature Twilio would send with the WebSocket handshake to
    /// `target`: over the `wss://` (or `ws://`) spelling of the URL, as Twilio
    /// connects to the `<Stream url>` from TwiML.
    ///
    /// # Errors
    /// [`SignatureError::InvalidRequestTarget`].
    pub fn sign_websocket(&self, target: &str) -> Result<String, SignatureError> {
        let url = self.request_url(target)?;
        let ws_url = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => format!("wss://{rest}"),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => format!("ws://{rest}"),
            _ => url,
        };
        Ok(base64_text(&self.mac(&ws_url, &[])))
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
        let signature = base64_text(&self.mac(&url, &[]));
        Ok(SignedJson { target: signed_target, signature })
    }

    /// Compares `received` with the MAC of every accepted spelling of `url`.
    fn check(
        &self,
        received: &[u8; MAC_BYTES],
        url: String,
        params: &[(&str, &str)],
        websocket: bool,
    ) -> Result<(), SignatureError> {
        let mut spellings = Vec::with_capacity(4);
        if websocket && let Some(twin) = websocket_twin(&url) {
            spellings.extend(default_port_twin(&twin));
            spellings.push(twin);
        }
        spellings.extend(default_port_twin(&url));
        // Every spelling is tried and the results OR-ed, so timing does not
        // reveal which one matched.
        let mut matched = Choice::from(0);
        for spelling in spellings.iter().map(String::as_str).chain([url.as_str()]) {
            matched |= self.mac(spelling, params).ct_eq(received);
        }
        if bool::from(matched) { Ok(()) } else { Err(SignatureError::Mismatch { url }) }
    }

    fn mac(&self, url: &str, sorted_params: &[(&str, &str)]) -> [u8; MAC_BYTES] {
        let mut mac = self.keyed.clone();
        mac.update(url.as_bytes());
        for (name, value) in sorted_params {
            mac.update(name.as_bytes());
            mac.update(value.as_bytes());
        }
        mac.finalize().into_bytes().into()
    }
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

fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("wss") {
        Some(443)
    } else if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("ws") {
        Some(80)
    } else {
        None
    }
}

/// `url` with the scheme swapped for its WebSocket/HTTP twin (wss ↔ https,
/// ws ↔ http), or `None` for any other scheme.
fn websocket_twin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let twin = match scheme.to_ascii_lowercase().as_str() {
        "https" => "wss",
        "wss" => "https",
        "http" => "ws",
        "ws" => "http",
        _ => return None,
    };
    Some(format!("{twin}://{rest}"))
}

/// Host and port of an authority (`userinfo@host:port`).
struct Authority<'a> {
    host: &'a str,
    /// The digits after `:`, `None` when there is no `:`.
    port: Option<&'a str>,
    /// Byte offset in the authority where `host` starts.
    host_start: usize,
}

/// Splits an authority, or `None` when it is malformed (an unclosed IPv6
/// bracket, a `:` inside an unbracketed host, junk after `]`).
fn split_authority(authority: &str) -> Option<Authority<'_>> {
    // Userinfo ends at the last '@': it may itself contain ':' (user:password),
    // which must not be mistaken for a port separator.
    let host_start = authority.rfind('@').map_or(0, |at| at + 1);
    let host_port = authority.get(host_start..)?;
    let (host, port) = if host_port.starts_with('[') {
        let close = host_port.find(']')?;
        let (host, after) = host_port.split_at(close + 1);
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match host_port.split_once(':') {
            Some((_, port)) if port.contains(':') => return None,
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    Some(Authority { host, port, host_start })
}

/// The other accepted spelling of `url` for Twilio's default-port rule:
/// without the port when it is the scheme's default, with the default port
/// when there is none, and `None` when the port is explicit and not the
/// default (or the URL cannot be taken apart safely).
fn default_port_twin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let default = default_port(scheme)?;
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_len);
    let parts = split_authority(authority)?;
    if parts.host.is_empty() {
        return None;
    }
    // Everything up to the end of the host: scheme, "://", userinfo, host.
    let through_host = url.get(..(url.len() - rest.len()) + parts.host_start + parts.host.len())?;
    match parts.port {
        None => Some(format!("{through_host}:{default}{tail}")),
        Some(port) if parse_port(port) == Some(default) => Some(format!("{through_host}{tail}")),
        Some(_) => None,
    }
}

/// A port as written in a URL: 1 to 5 ASCII digits (leading zeros allowed).
fn parse_port(port: &str) -> Option<u16> {
    let digits_only = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    if digits_only { port.parse().ok() } else { None }
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
        assert_eq!(default_port_twin("http://example.com:080/x").as_deref(), Some("http://example.com/x"));
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
        assert_eq!(default_port_twin("https://example.com:8443/x"), None);
        assert_eq!(default_port_twin("https://example.com:/x"), None);
    }

    #[test]
    fn default_port_spellings_with_userinfo_and_ipv6() {
        assert_eq!(
            default_port_twin("https://u:p@example.com/x?y=1").as_deref(),
            Some("https://u:p@example.com:443/x?y=1")
        );
        assert_eq!(
            default_port_twin("https://u:p@example.com:443/x").as_deref(),
            Some("https://u:p@example.com/x")
        );
        assert_eq!(default_port_twin("https://u:p@example.com:8443/x"), None);
        assert_eq!(default_port_twin("ws://[2001:db8::1]/m").as_deref(), Some("ws://[2001:db8::1]:80/m"));
        assert_eq!(default_port_twin("wss://[::1]:443").as_deref(), Some("wss://[::1]"));
        assert_eq!(default_port_twin("https://[::1]:8443/x"), None);
        assert_eq!(default_port_twin("https://[::1/x"), None);
        assert_eq!(default_port_twin("https://a:b:c/x"), None);
        assert_eq!(default_port_twin("ftp://example.com/x"), None);
        // Schemes compare case-insensitively, but the URL keeps its spelling: it is what was signed.
        assert_eq!(default_port_twin("HTTPS://example.com/x").as_deref(), Some("HTTPS://example.com:443/x"));
        assert_eq!(
            default_port_twin("https://example.com?q=1").as_deref(),
            Some("https://example.com:443?q=1")
        );

        let v = validator("https://twilio:s3cr:et@example.com");
        assert_eq!(
            v.validate_form("/twilio/voice", &SHORT_PARAMS, Some("77msNRJSIxveb9U5Ei9g5yuj6MM=")),
            Ok(())
        );
        let v = validator("http://[2001:db8::1]");
        assert_eq!(
            v.validate_form("/twilio/voice", &SHORT_PARAMS, Some("8pz7leE416VrXejG0x//7RayD5Q=")),
            Ok(())
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
                Just("http://u:p@10.0.0.1"), Just("wss://example.com/base")
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
