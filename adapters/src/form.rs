//! `application/x-www-form-urlencoded` bodies: the format of every Twilio
//! webhook and of every request to Twilio's REST API.
//!
//! [`Form::parse`] turns a request body into an ordered list of name/value
//! pairs; [`Form::encode`] does the reverse for the bodies voxproxy posts (the
//! REST client, the Twilio simulator). The parser is strict where the WHATWG
//! algorithm is lenient: a `%` not followed by two hex digits, or bytes that do
//! not decode to UTF-8, are errors rather than silently passed through,
//! because a webhook body is signed and a value we cannot represent exactly
//! could never be checked against its signature. Every size is bounded
//! ([`MAX_BODY_BYTES`], [`MAX_FIELDS`], [`MAX_NAME_BYTES`]) since the body
//! comes from the network before anything has been authenticated.
//!
//! Repeated names are kept, in order, as separate pairs: the signature covers
//! each of them, and the REST API expects some fields (`StatusCallbackEvent`)
//! once per value.
//!
//! ```
//! use voxproxy_adapters::form::Form;
//!
//! let form = Form::parse(b"CallSid=CA123&From=%2B14155550100&Caller+Name=Ada+L").unwrap();
//! assert_eq!(form.get("From"), Some("+14155550100"));
//! assert_eq!(form.get("Caller Name"), Some("Ada L"));
//!
//! let mut request = Form::new();
//! request.push("To", "+14155550100");
//! request.push("StatusCallbackEvent", "ringing");
//! request.push("StatusCallbackEvent", "answered");
//! assert_eq!(
//!     request.encode(),
//!     "To=%2B14155550100&StatusCallbackEvent=ringing&StatusCallbackEvent=answered"
//! );
//! assert_eq!(Form::parse(request.encode().as_bytes()).unwrap(), request);
//! ```

use core::fmt;

/// Largest body [`Form::parse`] accepts, in bytes.
///
/// A Twilio voice webhook or status callback is 1–2 KiB; 64 KiB leaves room
/// for many custom fields while bounding the work an unauthenticated request
/// can cause.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Most name/value pairs [`Form::parse`] accepts.
///
/// Twilio sends a few dozen; the bound keeps a body of `&&&&a&a&a…` from
/// becoming tens of thousands of allocations.
pub const MAX_FIELDS: usize = 256;

/// Longest field name [`Form::parse`] accepts, in bytes after decoding.
///
/// Twilio's names are short identifiers (`ForwardedFrom`, `SipResponseCode`).
pub const MAX_NAME_BYTES: usize = 256;

/// Why a body is not an acceptable form.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormError {
    /// The body is longer than [`MAX_BODY_BYTES`].
    TooLarge {
        /// Length of the body that was offered.
        len: usize,
    },
    /// The body has more than [`MAX_FIELDS`] name/value pairs.
    TooManyFields,
    /// A field name is longer than [`MAX_NAME_BYTES`] once decoded.
    NameTooLong {
        /// Byte offset in the body where the field starts.
        offset: usize,
        /// Decoded length of the name.
        len: usize,
    },
    /// A `%` is not followed by two hexadecimal digits.
    InvalidPercentEscape {
        /// Byte offset of the `%` in the body.
        offset: usize,
    },
    /// A name or value does not decode to valid UTF-8.
    InvalidUtf8 {
        /// Byte offset in the body where the offending name or value starts.
        offset: usize,
    },
}

impl fmt::Display for FormError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormError::TooLarge { len } => {
                write!(f, "form body is {len} bytes, more than the limit of {MAX_BODY_BYTES}")
            }
            FormError::TooManyFields => {
                write!(f, "form body has more than {MAX_FIELDS} fields")
            }
            FormError::NameTooLong { offset, len } => write!(
                f,
                "form field name at byte {offset} is {len} bytes long, more than the limit of {MAX_NAME_BYTES}"
            ),
            FormError::InvalidPercentEscape { offset } => write!(
                f,
                "form body has a '%' at byte {offset} that is not followed by two hex digits \
                 (a literal '%' must be sent as %25)"
            ),
            FormError::InvalidUtf8 { offset } => write!(
                f,
                "form field starting at byte {offset} does not decode to UTF-8 \
                 (the sender must percent-encode UTF-8 text)"
            ),
        }
    }
}

impl core::error::Error for FormError {}

/// An ordered list of form fields; repeated names stay separate, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    /// An empty form, to be filled with [`Form::push`].
    #[must_use]
    pub fn new() -> Self {
        Form::default()
    }

    /// Decodes a `application/x-www-form-urlencoded` body.
    ///
    /// Fields are separated by `&`; empty fields (`a=1&&b=2`) are skipped, a
    /// field without `=` is a name with an empty value, `+` is a space and
    /// `%XX` is the byte `XX`.
    ///
    /// # Errors
    /// Any [`FormError`]: the body or a name exceeds its limit, there are too
    /// many fields, a percent escape is malformed, or a decoded name or value
    /// is not UTF-8.
    pub fn parse(body: &[u8]) -> Result<Form, FormError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(FormError::TooLarge { len: body.len() });
        }
        let mut pairs = Vec::new();
        let mut offset: usize = 0;
        for field in body.split(|&b| b == b'&') {
            let start = offset;
            // `split` yields consecutive pieces, so the next field starts one past this one's `&`.
            offset = start.saturating_add(field.len()).saturating_add(1);
            if field.is_empty() {
                continue;
            }
            if pairs.len() == MAX_FIELDS {
                return Err(FormError::TooManyFields);
            }
            let (raw_name, raw_value, value_start) = match field.iter().position(|&b| b == b'=') {
                Some(eq) => {
                    let (name, rest) = field.split_at(eq);
                    (name, rest.get(1..).unwrap_or_default(), start.saturating_add(eq).saturating_add(1))
                }
                None => (field, &[][..], start.saturating_add(field.len())),
            };
            let name = decode_component(raw_name, start)?;
            if name.len() > MAX_NAME_BYTES {
                return Err(FormError::NameTooLong { offset: start, len: name.len() });
            }
            let value = decode_component(raw_value, value_start)?;
            pairs.push((name, value));
        }
        Ok(Form { pairs })
    }

    /// Appends a field; an existing field of the same name is kept.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.pairs.push((name.into(), value.into()));
    }

    /// The first value of `name`, if the form has it.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in body order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// All fields in body order.
    #[must_use]
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// All fields in body order, by value.
    #[must_use]
    pub fn into_pairs(self) -> Vec<(String, String)> {
        self.pairs
    }

    /// Number of fields, counting each repetition of a name.
    #[must_use]
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether the form has no fields.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The fields as a form body.
    ///
    /// Letters, digits and `*-._` stay as they are, a space becomes `+`, and
    /// every other byte of the UTF-8 text becomes `%XX` (upper-case hex), so
    /// [`Form::parse`] gives back exactly these fields.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut out = String::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the fields as a form body to `out` (see [`Form::encode`]),
    /// for callers that reuse one buffer across requests.
    pub fn encode_into(&self, out: &mut String) {
        for (i, (name, value)) in self.pairs.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            encode_component(name, out);
            out.push('=');
            encode_component(value, out);
        }
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Form {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        Form { pairs: iter.into_iter().map(|(n, v)| (n.into(), v.into())).collect() }
    }
}

/// Decodes one name or value; `start` is its offset in the body, for errors.
fn decode_component(raw: &[u8], start: usize) -> Result<String, FormError> {
    if !raw.iter().any(|&b| b == b'%' || b == b'+') {
        return match core::str::from_utf8(raw) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(FormError::InvalidUtf8 { offset: start }),
        };
    }
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'+' => {
                bytes.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = raw.get(i + 1).copied().and_then(hex_value);
                let lo = raw.get(i + 2).copied().and_then(hex_value);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => bytes.push(hi << 4 | lo),
                    _ => return Err(FormError::InvalidPercentEscape { offset: start.saturating_add(i) }),
                }
                i += 3;
            }
            _ => {
                bytes.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(bytes).map_err(|_| FormError::InvalidUtf8 { offset: start })
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn encode_component(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in text.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0x0f)]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pairs(form: &Form) -> Vec<(&str, &str)> {
        form.pairs().iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
    }

    #[test]
    fn decodes_plus_percent_and_utf8() {
        let form = Form::parse(b"From=%2B14155550100&CallerName=Jos%C3%A9+Mar%c3%ada&x=a%26b%3Dc").unwrap();
        assert_eq!(pairs(&form), [("From", "+14155550100"), ("CallerName", "José María"), ("x", "a&b=c")]);
    }

    #[test]
    fn keeps_repeated_names_in_order() {
        let form = Form::parse(b"e=ringing&To=1&e=answered&e=completed").unwrap();
        assert_eq!(form.get("e"), Some("ringing"));
        assert_eq!(form.get_all("e").collect::<Vec<_>>(), ["ringing", "answered", "completed"]);
        assert_eq!(form.len(), 4);
    }

    #[test]
    fn empty_fields_names_and_values() {
        assert!(Form::parse(b"").unwrap().is_empty());
        assert!(Form::parse(b"&&&").unwrap().is_empty());
        let form = Form::parse(b"a&&b=&=c&d==e").unwrap();
        assert_eq!(pairs(&form), [("a", ""), ("b", ""), ("", "c"), ("d", "=e")]);
    }

    #[test]
    fn rejects_bad_percent_escapes_with_offset() {
        assert_eq!(Form::parse(b"a=1&b=%zz"), Err(FormError::InvalidPercentEscape { offset: 6 }));
        assert_eq!(Form::parse(b"a=%4"), Err(FormError::InvalidPercentEscape { offset: 2 }));
        assert_eq!(Form::parse(b"%"), Err(FormError::InvalidPercentEscape { offset: 0 }));
        assert_eq!(Form::parse(b"ab=%+1"), Err(FormError::InvalidPercentEscape { offset: 3 }));
    }

    #[test]
    fn rejects_invalid_utf8_raw_or_escaped() {
        assert_eq!(Form::parse(b"a=1&b=%C3%28"), Err(FormError::InvalidUtf8 { offset: 6 }));
        assert_eq!(Form::parse(b"a=1&\xff=2"), Err(FormError::InvalidUtf8 { offset: 4 }));
        assert_eq!(Form::parse(b"n=%ED%A0%80"), Err(FormError::InvalidUtf8 { offset: 2 }));
    }

    #[test]
    fn enforces_limits() {
        let big = vec![b'a'; MAX_BODY_BYTES + 1];
        assert_eq!(Form::parse(&big), Err(FormError::TooLarge { len: MAX_BODY_BYTES + 1 }));
        assert!(Form::parse(&big[..MAX_BODY_BYTES - 1]).is_err(), "a name that long is rejected");

        let at_limit = vec!["a=1"; MAX_FIELDS].join("&");
        assert_eq!(Form::parse(at_limit.as_bytes()).unwrap().len(), MAX_FIELDS);
        let over = vec!["a=1"; MAX_FIELDS + 1].join("&");
        assert_eq!(Form::parse(over.as_bytes()), Err(FormError::TooManyFields));
        // Empty fields do not count towards the limit.
        let sparse = format!("{}&&&", at_limit);
        assert_eq!(Form::parse(sparse.as_bytes()).unwrap().len(), MAX_FIELDS);

        let long_name = format!("x=1&{}=v", "n".repeat(MAX_NAME_BYTES + 1));
        assert_eq!(
            Form::parse(long_name.as_bytes()),
            Err(FormError::NameTooLong { offset: 4, len: MAX_NAME_BYTES + 1 })
        );
        let ok_name = format!("{}=v", "n".repeat(MAX_NAME_BYTES));
        assert!(Form::parse(ok_name.as_bytes()).is_ok());
    }

    #[test]
    fn encodes_reserved_and_non_ascii_bytes() {
        let form: Form =
            [("Twiml", "<Say>Hi & bye</Say>"), ("To", "+1 555"), ("n", "é*-._~")].into_iter().collect();
        assert_eq!(form.encode(), "Twiml=%3CSay%3EHi+%26+bye%3C%2FSay%3E&To=%2B1+555&n=%C3%A9*-._%7E");
        assert_eq!(Form::new().encode(), "");
    }

    #[test]
    fn errors_explain_the_problem() {
        let msg = FormError::InvalidPercentEscape { offset: 6 }.to_string();
        assert!(msg.contains("byte 6") && msg.contains("%25"), "{msg}");
        let msg = FormError::TooLarge { len: 70_000 }.to_string();
        assert!(msg.contains("70000") && msg.contains("65536"), "{msg}");
    }

    proptest! {
        #[test]
        fn encode_then_parse_is_identity(
            fields in proptest::collection::vec(("\\PC{0,20}", "\\PC{0,40}"), 0..20)
        ) {
            let form: Form = fields.into_iter().collect();
            prop_assert_eq!(Form::parse(form.encode().as_bytes()), Ok(form));
        }

        #[test]
        fn parse_never_panics_and_reencodes_stably(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(form) = Form::parse(&body) {
                let again = Form::parse(form.encode().as_bytes());
                prop_assert_eq!(again, Ok(form));
            }
        }
    }
}
