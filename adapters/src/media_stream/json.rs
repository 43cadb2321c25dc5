//! A strict JSON (RFC 8259) scanner for the small, fixed Media Streams schema.
//!
//! Why hand-written: a general parser builds a tree or visits every value
//! through generic machinery; here the schema is a dozen known keys, and the
//! only large value is the base64 payload, which goes straight to the base64
//! decoder. The benchmark in `benches/media_stream.rs` keeps `serde_json` and
//! `simd-json` beside this scanner so the choice stays measured.
//!
//! The scanner walks a mutable frame. Strings whose value is used are
//! unescaped in place (an unescaped string is never longer than its escaped
//! form), so they can be lent out as `&str` without copying; values that are
//! skipped are fully validated but left untouched, so a later pass can seek
//! back and read them. Every string is checked to be UTF-8 and every `\u`
//! escape to pair its surrogates, as the JSON parsers we compare with do.

use core::ops::Range;

use super::MAX_NESTING;
use super::error::{MessageError, SyntaxError};

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// A cursor over one frame.
pub(crate) struct Scanner<'f> {
    buf: &'f mut [u8],
    pos: usize,
}

/// A number token: where it is and what kind.
pub(crate) struct Number {
    pub(crate) range: Range<usize>,
    /// No fraction and no exponent.
    pub(crate) integer: bool,
    pub(crate) negative: bool,
}

impl<'f> Scanner<'f> {
    pub(crate) fn new(buf: &'f mut [u8]) -> Self {
        Scanner { buf, pos: 0 }
    }

    /// Ends the scan and lends the (partly unescaped) frame for the lifetime
    /// of the original borrow.
    pub(crate) fn into_frame(self) -> &'f [u8] {
        self.buf
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn seek(&mut self, pos: usize) {
        self.pos = pos;
    }

    /// The bytes in `range`, clamped to the frame (`usize::MAX` as the end
    /// means "to the end").
    pub(crate) fn bytes(&self, range: Range<usize>) -> &[u8] {
        let end = range.end.min(self.buf.len());
        self.buf.get(range.start..end).unwrap_or_default()
    }

    pub(crate) fn text(&self, range: Range<usize>) -> Result<&str, MessageError> {
        let at = range.start;
        core::str::from_utf8(self.bytes(range)).map_err(|_| syntax(at, SyntaxError::InvalidUtf8))
    }

    pub(crate) fn error(&self, error: SyntaxError) -> MessageError {
        syntax(self.pos, error)
    }

    fn unexpected(&self) -> MessageError {
        match self.byte() {
            Some(b) => self.error(SyntaxError::UnexpectedByte(b)),
            None => self.error(SyntaxError::UnexpectedEnd),
        }
    }

    /// The byte at the cursor.
    pub(crate) fn byte(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    pub(crate) fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.byte() {
            self.pos += 1;
        }
    }

    /// Skips whitespace, then requires `expected`.
    pub(crate) fn eat(&mut self, expected: u8) -> Result<(), MessageError> {
        self.skip_ws();
        if self.byte() == Some(expected) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    /// Requires nothing but whitespace up to the end of the frame.
    pub(crate) fn end(&mut self) -> Result<(), MessageError> {
        self.skip_ws();
        match self.byte() {
            None => Ok(()),
            Some(_) => Err(self.error(SyntaxError::TrailingData)),
        }
    }

    /// With the cursor just inside an object (after `{` or after a member's
    /// value), moves to the next member: returns its key, unescaped, with the
    /// cursor at its value; or `None` after consuming the closing `}`.
    /// `first` tracks whether a comma is due; start it at `true`.
    pub(crate) fn next_key(&mut self, first: &mut bool) -> Result<Option<Range<usize>>, MessageError> {
        self.skip_ws();
        match self.byte() {
            Some(b'}') => {
                self.pos += 1;
                return Ok(None);
            }
            Some(b',') if !*first => {
                self.pos += 1;
                self.skip_ws();
            }
            Some(_) if *first => {}
            _ => return Err(self.unexpected()),
        }
        *first = false;
        if self.byte() != Some(b'"') {
            return Err(self.unexpected());
        }
        let key = self.string()?;
        self.eat(b':')?;
        self.skip_ws();
        Ok(Some(key))
    }

    /// With the cursor on `"`, reads a string, unescapes it in place and
    /// returns where its value now lies.
    pub(crate) fn string(&mut self) -> Result<Range<usize>, MessageError> {
        self.scan_string::<true>()
    }

    /// Finishes a string whose content up to `from` has been read elsewhere
    /// and holds no quote, backslash, control or non-ASCII byte: unescapes the
    /// rest in place and returns where the rest now lies.
    pub(crate) fn string_tail(&mut self, from: usize) -> Result<Range<usize>, MessageError> {
        self.scan_string_from::<true>(from)
    }

    fn scan_string<const UNESCAPE: bool>(&mut self) -> Result<Range<usize>, MessageError> {
        self.scan_string_from::<UNESCAPE>(self.pos + 1)
    }

    /// The one string routine, from content offset `start`: validates, and
    /// with `UNESCAPE` rewrites escapes in place. Without `UNESCAPE` the frame
    /// is left as it was.
    fn scan_string_from<const UNESCAPE: bool>(&mut self, start: usize) -> Result<Range<usize>, MessageError> {
        let mut r = start;
        // Fast path: most strings (and the whole payload) have no escapes.
        loop {
            r = find_special(self.buf, r);
            match self.buf.get(r) {
                None => return Err(syntax(r, SyntaxError::UnexpectedEnd)),
                Some(b'"') => {
                    self.pos = r + 1;
                    return Ok(start..r);
                }
                Some(b'\\') => break,
                Some(&b) if b < 0x20 => return Err(syntax(r, SyntaxError::ControlCharacter(b))),
                Some(&b) if b >= 0x80 => r += utf8_char_len(&self.buf[r..], r)?,
                Some(_) => r += 1,
            }
        }
        // Slow path: `w` trails `r` by what the escapes so far saved.
        let mut w = r;
        loop {
            match self.buf.get(r) {
                None => return Err(syntax(r, SyntaxError::UnexpectedEnd)),
                Some(b'"') => {
                    self.pos = r + 1;
                    return Ok(start..w);
                }
                Some(b'\\') => {
                    let (c, len) = unescape(&self.buf[r..]).map_err(|e| syntax(r, e))?;
                    let mut utf8 = [0u8; 4];
                    let text = c.encode_utf8(&mut utf8).as_bytes();
                    if UNESCAPE {
                        self.buf[w..w + text.len()].copy_from_slice(text);
                    }
                    r += len;
                    w += text.len();
                }
                Some(&b) if b < 0x20 => return Err(syntax(r, SyntaxError::ControlCharacter(b))),
                Some(&b) if b >= 0x80 => {
                    let len = utf8_char_len(&self.buf[r..], r)?;
                    if UNESCAPE {
                        self.buf.copy_within(r..r + len, w);
                    }
                    r += len;
                    w += len;
                }
                Some(&b) => {
                    if UNESCAPE {
                        self.buf[w] = b;
                    }
                    r += 1;
                    w += 1;
                }
            }
        }
    }

    /// With the cursor on `-` or a digit, reads a number.
    pub(crate) fn number(&mut self) -> Result<Number, MessageError> {
        let start = self.pos;
        let negative = self.byte() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        match self.byte() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.number_error()),
        }
        let mut integer = true;
        if self.byte() == Some(b'.') {
            self.pos += 1;
            integer = false;
            self.required_digits()?;
        }
        if let Some(b'e' | b'E') = self.byte() {
            self.pos += 1;
            integer = false;
            if let Some(b'+' | b'-') = self.byte() {
                self.pos += 1;
            }
            self.required_digits()?;
        }
        Ok(Number { range: start..self.pos, integer, negative })
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.byte() {
            self.pos += 1;
        }
    }

    fn required_digits(&mut self) -> Result<(), MessageError> {
        if let Some(b'0'..=b'9') = self.byte() {
            self.digits();
            Ok(())
        } else {
            Err(self.number_error())
        }
    }

    fn number_error(&self) -> MessageError {
        match self.byte() {
            None => self.error(SyntaxError::UnexpectedEnd),
            Some(_) => self.error(SyntaxError::InvalidNumber),
        }
    }

    /// Skips a number, refusing one that overflows a 64-bit float (as other
    /// JSON parsers do, so that whatever they refuse we refuse too).
    fn skip_number(&mut self) -> Result<(), MessageError> {
        let number = self.number()?;
        // Up to 15 digits without an exponent always fit.
        if !number.integer || number.range.len() > 15 {
            let at = number.range.start;
            let finite = self
                .text(number.range)
                .ok()
                .and_then(|text| text.parse::<f64>().ok())
                .is_some_and(f64::is_finite);
            if !finite {
                return Err(syntax(at, SyntaxError::NumberOutOfRange));
            }
        }
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), MessageError> {
        let end = self.pos + word.len();
        if self.buf.get(self.pos..end) == Some(word) {
            self.pos = end;
            Ok(())
        } else {
            // Point at the first byte that differs.
            while self.buf.get(self.pos) == word.get(self.pos + word.len() - end) {
                self.pos += 1;
            }
            Err(self.unexpected())
        }
    }

    /// With the cursor inside an object, at a key's opening quote (after any
    /// whitespace): skips the key and its colon.
    fn skip_key(&mut self) -> Result<(), MessageError> {
        if self.byte() != Some(b'"') {
            return Err(self.unexpected());
        }
        self.scan_string::<false>()?;
        self.eat(b':')
    }

    /// Validates and skips one value of any kind. `depth` is how many arrays
    /// and objects already enclose it.
    pub(crate) fn skip_value(&mut self, depth: usize) -> Result<(), MessageError> {
        // One bit per open container (1 = object); MAX_NESTING <= 64 keeps it in a u64.
        let mut kinds: u64 = 0;
        let mut open = 0usize;
        'value: loop {
            self.skip_ws();
            match self.byte() {
                Some(b @ (b'{' | b'[')) => {
                    if depth + open >= MAX_NESTING {
                        return Err(self.error(SyntaxError::TooDeep));
                    }
                    let object = b == b'{';
                    self.pos += 1;
                    self.skip_ws();
                    if self.byte() == Some(if object { b'}' } else { b']' }) {
                        self.pos += 1;
                    } else {
                        kinds = (kinds << 1) | u64::from(object);
                        open += 1;
                        if object {
                            self.skip_key()?;
                        }
                        continue 'value;
                    }
                }
                Some(b'"') => {
                    self.scan_string::<false>()?;
                }
                Some(b'-' | b'0'..=b'9') => self.skip_number()?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                _ => return Err(self.unexpected()),
            }
            // A value ended: close what it ended, until a comma or the outermost value.
            while open > 0 {
                self.skip_ws();
                let object = kinds & 1 == 1;
                match self.byte() {
                    Some(b',') => {
                        self.pos += 1;
                        if object {
                            self.skip_ws();
                            self.skip_key()?;
                        }
                        continue 'value;
                    }
                    Some(b'}') if object => {}
                    Some(b']') if !object => {}
                    _ => return Err(self.unexpected()),
                }
                self.pos += 1;
                kinds >>= 1;
                open -= 1;
            }
            return Ok(());
        }
    }
}

pub(crate) fn syntax(offset: usize, error: SyntaxError) -> MessageError {
    MessageError::Syntax { offset, error }
}

/// Index of the first byte at or after `from` that ends the fast path of a
/// string (`"`, `\`, a control character or a non-ASCII byte), eight bytes at a
/// time; stops early, at most seven bytes before the end, when no full word is
/// left.
#[inline]
pub(crate) fn find_special(buf: &[u8], mut from: usize) -> usize {
    while let Some(word) = buf.get(from..).and_then(<[u8]>::first_chunk::<8>) {
        let x = u64::from_le_bytes(*word);
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        // Each term flags its lowest matching byte exactly (higher flags may be
        // borrow artefacts, above a real match), so the lowest flag overall is
        // the first special byte.
        let found = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (x.wrapping_sub(ONES * 0x20) & !x)
            | x;
        let found = found & HIGHS;
        if found != 0 {
            return from + (found.trailing_zeros() / 8) as usize;
        }
        from += 8;
    }
    from
}

/// Length of the UTF-8 character starting `rest` (whose first byte is not
/// ASCII); `at` is its offset, for the error.
fn utf8_char_len(rest: &[u8], at: usize) -> Result<usize, MessageError> {
    let window = &rest[..rest.len().min(4)];
    let valid = match core::str::from_utf8(window) {
        Ok(text) => text,
        Err(e) => core::str::from_utf8(&window[..e.valid_up_to()]).unwrap_or_default(),
    };
    valid.chars().next().map(char::len_utf8).ok_or(syntax(at, SyntaxError::InvalidUtf8))
}

/// Decodes the escape at the start of `rest` (which starts with `\`):
/// the character and how many bytes the escape took.
fn unescape(rest: &[u8]) -> Result<(char, usize), SyntaxError> {
    let c = match rest.get(1) {
        None => return Err(SyntaxError::UnexpectedEnd),
        Some(b'"') => '"',
        Some(b'\\') => '\\',
        Some(b'/') => '/',
        Some(b'b') => '\u{8}',
        Some(b'f') => '\u{c}',
        Some(b'n') => '\n',
        Some(b'r') => '\r',
        Some(b't') => '\t',
        Some(b'u') => return unescape_unicode(rest),
        Some(_) => return Err(SyntaxError::InvalidEscape),
    };
    Ok((c, 2))
}

fn unescape_unicode(rest: &[u8]) -> Result<(char, usize), SyntaxError> {
    let high = hex4(rest.get(2..6))?;
    match high {
        0xD800..=0xDBFF => {
            match (rest.get(6), rest.get(7)) {
                (Some(b'\\'), Some(b'u')) => {}
                (None, _) | (Some(b'\\'), None) => return Err(SyntaxError::UnexpectedEnd),
                _ => return Err(SyntaxError::LoneSurrogate),
            }
            let low = hex4(rest.get(8..12))?;
            if !(0xDC00..=0xDFFF).contains(&low) {
                return Err(SyntaxError::LoneSurrogate);
            }
            let code = 0x10000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(low) - 0xDC00);
            char::from_u32(code).map(|c| (c, 12)).ok_or(SyntaxError::LoneSurrogate)
        }
        0xDC00..=0xDFFF => Err(SyntaxError::LoneSurrogate),
        _ => char::from_u32(u32::from(high)).map(|c| (c, 6)).ok_or(SyntaxError::LoneSurrogate),
    }
}

fn hex4(digits: Option<&[u8]>) -> Result<u16, SyntaxError> {
    let digits = digits.ok_or(SyntaxError::UnexpectedEnd)?;
    digits.iter().try_fold(0u16, |acc, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(SyntaxError::InvalidEscape),
        };
        Ok((acc << 4) | u16::from(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Skips one whole document; returns the error kind if any.
    fn skip(text: &str) -> Result<(), SyntaxError> {
        let mut buf = text.as_bytes().to_vec();
        let mut s = Scanner::new(&mut buf);
        let result = s.skip_value(0).and_then(|()| s.end());
        result.map_err(|e| match e {
            MessageError::Syntax { error, .. } => error,
            other => panic!("unexpected {other:?}"),
        })
    }

    fn unescaped(text: &str) -> Result<String, SyntaxError> {
        let mut buf = text.as_bytes().to_vec();
        let mut s = Scanner::new(&mut buf);
        match s.string() {
            Ok(range) => Ok(s.text(range).unwrap().to_owned()),
            Err(MessageError::Syntax { error, .. }) => Err(error),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn unescapes_every_escape_form_in_place() {
        assert_eq!(unescaped(r#""plain""#).unwrap(), "plain");
        assert_eq!(unescaped(r#""a\"b\\c\/d\be\ff\ng\rh\ti""#).unwrap(), "a\"b\\c/d\u{8}e\u{c}f\ng\rh\ti");
        assert_eq!(unescaped(r#""\u0041\u00e9\u20AC""#).unwrap(), "Aé€");
        assert_eq!(unescaped(r#""x\ud83d\ude00y""#).unwrap(), "x😀y");
        assert_eq!(unescaped("\"caf\u{e9} \\n \u{1F600}\"").unwrap(), "café \n 😀");
        // Longer than one fast-path word before and after the escape.
        assert_eq!(
            unescaped(r#""0123456789abcdef\"0123456789abcdef""#).unwrap(),
            "0123456789abcdef\"0123456789abcdef"
        );
    }

    #[test]
    fn rejects_bad_strings() {
        assert_eq!(unescaped(r#""\x""#), Err(SyntaxError::InvalidEscape));
        assert_eq!(unescaped(r#""\u00g0""#), Err(SyntaxError::InvalidEscape));
        assert_eq!(unescaped(r#""\ud83d""#), Err(SyntaxError::LoneSurrogate));
        assert_eq!(unescaped(r#""\ud83d\u0041""#), Err(SyntaxError::LoneSurrogate));
        assert_eq!(unescaped(r#""\ude00""#), Err(SyntaxError::LoneSurrogate));
        assert_eq!(unescaped(r#""\ud83d\n""#), Err(SyntaxError::LoneSurrogate));
        assert_eq!(unescaped("\"a\tb\""), Err(SyntaxError::ControlCharacter(b'\t')));
        assert_eq!(unescaped("\"0123456789\u{1}\""), Err(SyntaxError::ControlCharacter(1)));
        assert_eq!(unescaped("\"abc"), Err(SyntaxError::UnexpectedEnd));
        assert_eq!(unescaped("\"abc\\"), Err(SyntaxError::UnexpectedEnd));
        assert_eq!(unescaped("\"\\u12"), Err(SyntaxError::UnexpectedEnd));
        let mut bad_utf8 = b"\"ab\xff\"".to_vec();
        let mut s = Scanner::new(&mut bad_utf8);
        assert_eq!(s.string(), Err(syntax(3, SyntaxError::InvalidUtf8)));
        let mut truncated_utf8 = b"\"ab\xc3".to_vec();
        let mut s = Scanner::new(&mut truncated_utf8);
        assert_eq!(s.string(), Err(syntax(3, SyntaxError::InvalidUtf8)));
        let mut surrogate_utf8 = b"\"\xed\xa0\x80\"".to_vec();
        let mut s = Scanner::new(&mut surrogate_utf8);
        assert_eq!(s.string(), Err(syntax(1, SyntaxError::InvalidUtf8)));
    }

    #[test]
    fn find_special_stops_at_the_first_special_byte() {
        let text = b"abcdefgh\"jklmnop";
        assert_eq!(find_special(text, 0), 8);
        for (i, special) in [b'"', b'\\', 0x00, 0x1F, 0x80, 0xFF].into_iter().enumerate() {
            let mut text = *b"ABCDEFGHIJKLMNOPQRSTUVWX";
            text[3 + i] = special;
            text[12] = b'"';
            assert_eq!(find_special(&text, 0), 3 + i, "byte {special:#x}");
            assert_eq!(find_special(&text, 4 + i), 12);
        }
        // 0x20 and 0x7F are ordinary string bytes.
        assert_eq!(find_special(b" \x7f      \"", 0), 8);
    }

    #[test]
    fn skips_valid_documents() {
        for doc in [
            "0",
            "-0",
            "-12.5e+3",
            "1E-2",
            "true",
            "false",
            "null",
            r#""s""#,
            "[]",
            "{}",
            " [ 1 , [ ] , { } , { \"a\" : [ null ] } ] ",
            r#"{"a":{"b":{"c":[1,2,{"d":"\u00e9"}]}},"e":false}"#,
            "1.7976931348623157e308",
        ] {
            assert_eq!(skip(doc), Ok(()), "{doc}");
        }
    }

    #[test]
    fn refuses_invalid_documents() {
        let cases: [(&str, SyntaxError); 17] = [
            ("", SyntaxError::UnexpectedEnd),
            ("01", SyntaxError::TrailingData),
            ("-", SyntaxError::UnexpectedEnd),
            ("-a", SyntaxError::InvalidNumber),
            ("1.", SyntaxError::UnexpectedEnd),
            ("1.e3", SyntaxError::InvalidNumber),
            ("1e", SyntaxError::UnexpectedEnd),
            (".5", SyntaxError::UnexpectedByte(b'.')),
            ("1e400", SyntaxError::NumberOutOfRange),
            ("tru", SyntaxError::UnexpectedEnd),
            ("trux", SyntaxError::UnexpectedByte(b'x')),
            ("[1,]", SyntaxError::UnexpectedByte(b']')),
            ("[1 2]", SyntaxError::UnexpectedByte(b'2')),
            ("{\"a\" 1}", SyntaxError::UnexpectedByte(b'1')),
            ("{\"a\":1,}", SyntaxError::UnexpectedByte(b'}')),
            ("{1:2}", SyntaxError::UnexpectedByte(b'1')),
            ("[1}", SyntaxError::UnexpectedByte(b'}')),
        ];
        for (doc, error) in cases {
            assert_eq!(skip(doc), Err(error), "{doc}");
        }
    }

    #[test]
    fn bounds_nesting() {
        let ok = "[".repeat(MAX_NESTING) + &"]".repeat(MAX_NESTING);
        assert_eq!(skip(&ok), Ok(()));
        let deep = "[".repeat(MAX_NESTING + 1) + &"]".repeat(MAX_NESTING + 1);
        assert_eq!(skip(&deep), Err(SyntaxError::TooDeep));
        let deep_objects = "{\"a\":".repeat(MAX_NESTING + 1) + "1" + &"}".repeat(MAX_NESTING + 1);
        assert_eq!(skip(&deep_objects), Err(SyntaxError::TooDeep));
    }

    #[test]
    fn skipping_leaves_the_frame_untouched() {
        let text = r#"{"k\u0041":["\n\u00e9"]}"#;
        let mut buf = text.as_bytes().to_vec();
        Scanner::new(&mut buf).skip_value(0).unwrap();
        assert_eq!(buf, text.as_bytes());
    }
}
