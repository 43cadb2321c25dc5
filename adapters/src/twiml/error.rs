//! The one error type of the TwiML module.

use core::fmt;

/// Longest slice of an offending value that an error message repeats.
///
/// Values come from hostile documents of up to [`ParseLimits::max_bytes`];
/// an error should name the culprit, not echo a whole document into a log.
///
/// [`ParseLimits::max_bytes`]: super::ParseLimits::max_bytes
const EXCERPT_CHARS: usize = 64;

/// Cuts `value` to at most [`EXCERPT_CHARS`] characters for an error message.
pub(crate) fn excerpt(value: &str) -> String {
    match value.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => {
            let mut short = value.get(..cut).unwrap_or_default().to_owned();
            short.push('…');
            short
        }
        None => value.to_owned(),
    }
}

/// Why a TwiML document could not be built, written or parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TwimlError {
    /// The document is longer than the parser accepts.
    TooLarge {
        /// Length of the document in bytes.
        len: usize,
        /// The limit in force ([`super::ParseLimits::max_bytes`]).
        max: usize,
    },
    /// Elements are nested deeper than allowed.
    TooDeep {
        /// The limit in force ([`super::ParseLimits::max_depth`]).
        max: usize,
    },
    /// The document holds more elements than allowed.
    TooManyElements {
        /// The limit in force ([`super::ParseLimits::max_elements`]).
        max: usize,
    },
    /// One element carries more attributes than allowed.
    TooManyAttributes {
        /// The element's name.
        element: String,
        /// The limit in force ([`super::ParseLimits::max_attributes`]).
        max: usize,
    },
    /// The text is not well-formed XML.
    Malformed {
        /// Byte offset in the input where the problem was found.
        offset: usize,
        /// What was wrong there.
        what: &'static str,
    },
    /// An entity reference other than the five XML predefines (`&amp;`
    /// `&lt;` `&gt;` `&quot;` `&apos;`) or a numeric character reference.
    UnknownEntity {
        /// Byte offset of the `&`.
        offset: usize,
        /// The entity's name (shortened if long).
        entity: String,
    },
    /// A `<!DOCTYPE …>` declaration: refused, because DTDs are how entity
    /// expansion attacks get in and TwiML never needs one.
    DoctypeNotAllowed {
        /// Byte offset of the declaration.
        offset: usize,
    },
    /// An end tag does not close the element that is open.
    MismatchedTag {
        /// Byte offset of the end tag.
        offset: usize,
        /// The element that is open.
        expected: String,
        /// The name in the end tag.
        found: String,
    },
    /// The same attribute appears twice on one element.
    DuplicateAttribute {
        /// The element's name.
        element: String,
        /// The repeated attribute.
        attribute: String,
    },
    /// The root element is not `<Response>`.
    NotResponse {
        /// The root element's name.
        found: String,
    },
    /// An element appears where TwiML does not allow it (for example
    /// `<Dial>` inside `<Gather>`, or any element inside `<Play>`).
    UnexpectedElement {
        /// The enclosing element.
        parent: String,
        /// The element that is not allowed there.
        element: String,
    },
    /// Non-whitespace text inside an element that holds only elements or
    /// nothing at all (for example `<Response>hello</Response>`).
    UnexpectedText {
        /// The enclosing element.
        element: String,
    },
    /// A required attribute is missing.
    MissingAttribute {
        /// The element's name.
        element: String,
        /// The missing attribute.
        attribute: &'static str,
    },
    /// An attribute has a value TwiML does not define for it.
    InvalidAttribute {
        /// The element's name.
        element: String,
        /// The attribute's name.
        attribute: &'static str,
        /// The offending value (shortened if long).
        value: String,
        /// What the attribute accepts.
        expected: &'static str,
    },
    /// A `<Stream>` url is not a `ws://` or `wss://` URL without query string
    /// or fragment.
    InvalidStreamUrl {
        /// The offending URL (shortened if long).
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A character XML 1.0 cannot carry (a control character other than tab,
    /// line feed and carriage return, or U+FFFE / U+FFFF) in a value to be
    /// written. Run untrusted text through [`super::remove_forbidden_chars`]
    /// first.
    ForbiddenChar {
        /// The element being written.
        element: String,
        /// The attribute being written, `None` for element text.
        attribute: Option<String>,
        /// The offending character.
        ch: char,
    },
    /// A name given for an element or an extra attribute is not an XML name.
    InvalidName {
        /// The offending name (shortened if long).
        name: String,
    },
}

impl fmt::Display for TwimlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { len, max } => {
                write!(f, "TwiML document is {len} bytes, more than the {max} accepted")
            }
            Self::TooDeep { max } => write!(f, "TwiML elements are nested more than {max} deep"),
            Self::TooManyElements { max } => write!(f, "TwiML document has more than {max} elements"),
            Self::TooManyAttributes { element, max } => {
                write!(f, "TwiML element <{element}> has more than {max} attributes")
            }
            Self::Malformed { offset, what } => write!(f, "malformed TwiML at byte {offset}: {what}"),
            Self::UnknownEntity { offset, entity } => write!(
                f,
                "unknown entity &{entity}; at byte {offset} (TwiML allows only &amp; &lt; &gt; &quot; &apos; and &#…;)"
            ),
            Self::DoctypeNotAllowed { offset } => {
                write!(f, "TwiML must not contain a <!DOCTYPE> declaration (found at byte {offset})")
            }
            Self::MismatchedTag { offset, expected, found } => {
                write!(f, "end tag </{found}> at byte {offset} does not close the open <{expected}>")
            }
            Self::DuplicateAttribute { element, attribute } => {
                write!(f, "attribute {attribute:?} appears twice on <{element}>")
            }
            Self::NotResponse { found } => {
                write!(f, "TwiML root element must be <Response>, found <{found}>")
            }
            Self::UnexpectedElement { parent, element } => {
                write!(f, "<{element}> is not allowed inside <{parent}>")
            }
            Self::UnexpectedText { element } => {
                write!(f, "<{element}> must not contain text, only the elements TwiML allows in it")
            }
            Self::MissingAttribute { element, attribute } => {
                write!(f, "<{element}> needs a {attribute:?} attribute")
            }
            Self::InvalidAttribute { element, attribute, value, expected } => {
                write!(f, "<{element} {attribute}={value:?}> is invalid: expected {expected}")
            }
            Self::InvalidStreamUrl { url, reason } => write!(f, "invalid <Stream> url {url:?}: {reason}"),
            Self::ForbiddenChar { element, attribute: Some(attribute), ch } => write!(
                f,
                "attribute {attribute:?} of <{element}> contains {ch:?}, which XML 1.0 cannot carry"
            ),
            Self::ForbiddenChar { element, attribute: None, ch } => {
                write!(f, "text of <{element}> contains {ch:?}, which XML 1.0 cannot carry")
            }
            Self::InvalidName { name } => write!(f, "{name:?} is not a valid XML element or attribute name"),
        }
    }
}

impl core::error::Error for TwimlError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_keeps_short_values_and_cuts_long_ones_on_a_char_boundary() {
        assert_eq!(excerpt("wss://x"), "wss://x");
        let long: String = core::iter::repeat_n('é', 100).collect();
        let short = excerpt(&long);
        assert_eq!(short.chars().count(), EXCERPT_CHARS + 1);
        assert!(short.ends_with('…'));
    }

    #[test]
    fn display_names_the_offending_value() {
        let e = TwimlError::InvalidAttribute {
            element: "Stream".into(),
            attribute: "track",
            value: "sideways".into(),
            expected: "inbound_track, outbound_track or both_tracks",
        };
        let text = e.to_string();
        assert!(text.contains("sideways") && text.contains("Stream") && text.contains("track"), "{text}");
    }
}
