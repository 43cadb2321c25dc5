//! The XML underneath TwiML: a generic element tree, a strict bounded parser
//! for the subset TwiML uses, and an escaping writer.
//!
//! The subset: an optional XML declaration, one root element, elements with
//! attributes, character data, the five predefined entities, numeric character
//! references, CDATA sections, comments and processing instructions (both
//! skipped). `<!DOCTYPE>` is refused. Line ends are normalized (CR LF and lone
//! CR become LF) and attribute values are whitespace-normalized (tab, LF, CR
//! become a space), as XML 1.0 requires of every parser; the writer escapes
//! those characters where they must survive.

use core::fmt::Write as _;

use super::error::{TwimlError, excerpt};

/// One attribute of an element: a name and its (unescaped) value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Attribute {
    /// The attribute's name, case-sensitive (`statusCallback`).
    pub name: String,
    /// The attribute's value, with entities already decoded.
    pub value: String,
}

impl Attribute {
    /// An attribute `name="value"`.
    #[must_use]
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Attribute { name: name.into(), value: value.into() }
    }
}

/// One piece of an element's content.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Node {
    /// A child element.
    Element(Element),
    /// Character data, entities decoded. The parser never yields an empty
    /// text node nor two text nodes in a row.
    Text(String),
}

/// An element kept as a tree: SSML inside `<Say>`, and any verb or noun this
/// module does not model (`<Enqueue>`, `<Dial><Client>`, `<Connect><Room>` …),
/// preserved verbatim so that a reader can report or forward it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Element {
    /// The element's name, case-sensitive.
    pub name: String,
    /// Attributes in document order.
    pub attributes: Vec<Attribute>,
    /// Content in document order, whitespace included.
    pub children: Vec<Node>,
}

impl Element {
    /// An element with no attributes and no content.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Element { name: name.into(), attributes: Vec::new(), children: Vec::new() }
    }

    /// Adds an attribute.
    #[must_use]
    pub fn attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.push(Attribute::new(name, value));
        self
    }

    /// Appends a child element.
    #[must_use]
    pub fn child(mut self, child: Element) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    /// Appends text; empty text is not stored, so the element reads back
    /// the same after a round trip through XML.
    #[must_use]
    pub fn text(mut self, text: impl Into<String>) -> Self {
        push_text_node(&mut self.children, text.into());
        self
    }

    /// Value of the attribute `name`, if present.
    #[must_use]
    pub fn get_attribute(&self, name: &str) -> Option<&str> {
        self.attributes.iter().find(|a| a.name == name).map(|a| a.value.as_str())
    }

    /// All text inside the element and its descendants, in document order.
    #[must_use]
    pub fn text_content(&self) -> String {
        let mut out = String::new();
        collect_text(&self.children, &mut out);
        out
    }
}

/// Appends `text` to `nodes`, merging with a preceding text node and
/// dropping empty text, which keeps content in the form the parser yields.
pub(crate) fn push_text_node(nodes: &mut Vec<Node>, text: String) {
    if text.is_empty() {
        return;
    }
    if let Some(Node::Text(last)) = nodes.last_mut() {
        last.push_str(&text);
    } else {
        nodes.push(Node::Text(text));
    }
}

/// Appends the text of `nodes` and their descendants to `out`.
pub(crate) fn collect_text(nodes: &[Node], out: &mut String) {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Element(e) => collect_text(&e.children, out),
        }
    }
}

/// Bounds the parser puts on a document, so that hostile input costs at most
/// linear time and a bounded amount of memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseLimits {
    /// Longest document accepted, in bytes. Twilio itself refuses webhook
    /// answers over 64 KB.
    pub max_bytes: usize,
    /// Deepest element nesting (`<Response>` is depth 1). Trees are
    /// recursive (dropping, writing and walking them recurse), so keep this
    /// in the tens.
    pub max_depth: usize,
    /// Most elements in one document.
    pub max_elements: usize,
    /// Most attributes on one element.
    pub max_attributes: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits { max_bytes: 64 * 1024, max_depth: 32, max_elements: 4096, max_attributes: 32 }
    }
}

/// Whether XML 1.0 forbids `c` in a document, literally or as `&#…;`:
/// control characters other than tab, LF and CR, and U+FFFE / U+FFFF.
/// (Surrogates cannot occur in a Rust `char`.)
#[must_use]
pub(crate) fn is_forbidden_char(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{B}' | '\u{C}' | '\u{E}'..='\u{1F}' | '\u{FFFE}' | '\u{FFFF}')
}

fn is_xml_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Whether `text` is empty or XML whitespace only.
#[must_use]
pub(crate) fn is_blank(text: &str) -> bool {
    text.bytes().all(is_xml_whitespace)
}

fn is_name_start_char(c: char) -> bool {
    matches!(c,
        ':' | 'A'..='Z' | '_' | 'a'..='z'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

fn is_name_char(c: char) -> bool {
    is_name_start_char(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// Whether `name` is an XML 1.0 `Name`.
#[must_use]
pub(crate) fn is_xml_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(is_name_start_char) && chars.all(is_name_char)
}

/// Parses `input` into the tree of its root element.
pub(crate) fn parse_document(input: &str, limits: &ParseLimits) -> Result<Element, TwimlError> {
    if input.len() > limits.max_bytes {
        return Err(TwimlError::TooLarge { len: input.len(), max: limits.max_bytes });
    }
    if let Some((offset, _)) = input.char_indices().find(|&(_, c)| is_forbidden_char(c)) {
        return Err(TwimlError::Malformed { offset, what: "character that XML 1.0 does not allow" });
    }
    Parser { src: input, pos: 0, limits, elements: 0 }.document()
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    limits: &'a ParseLimits,
    elements: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or_default()
    }

    fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    fn malformed(&self, what: &'static str) -> TwimlError {
        TwimlError::Malformed { offset: self.pos, what }
    }

    /// Skips XML whitespace; says whether there was any.
    fn skip_whitespace(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(is_xml_whitespace) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// Moves past the next `delimiter`, or fails with `what`.
    fn skip_past(&mut self, delimiter: &str, what: &'static str) -> Result<(), TwimlError> {
        match self.rest().find(delimiter) {
            Some(i) => {
                self.pos += i + delimiter.len();
                Ok(())
            }
            None => Err(self.malformed(what)),
        }
    }

    fn name(&mut self) -> Result<&'a str, TwimlError> {
        let rest = self.rest();
        let mut chars = rest.char_indices();
        if !chars.next().is_some_and(|(_, c)| is_name_start_char(c)) {
            return Err(self.malformed("expected an element or attribute name"));
        }
        let end = chars.find(|&(_, c)| !is_name_char(c)).map_or(rest.len(), |(i, _)| i);
        self.pos += end;
        Ok(rest.get(..end).unwrap_or_default())
    }

    fn document(mut self) -> Result<Element, TwimlError> {
        if self.rest().starts_with('\u{FEFF}') {
            self.pos += '\u{FEFF}'.len_utf8();
        }
        if self.at_xml_declaration() {
            self.skip_past("?>", "XML declaration is not closed by '?>'")?;
        }
        let mut stack: Vec<Element> = Vec::new();
        let mut root: Option<Element> = None;
        let mut text = String::new();
        while self.pos < self.src.len() {
            let rest = self.rest();
            if rest.starts_with("<!--") {
                self.pos += 4;
                self.skip_past("-->", "comment is not closed by '-->'")?;
            } else if rest.starts_with("<![CDATA[") {
                if stack.is_empty() {
                    return Err(self.malformed("CDATA section outside the root element"));
                }
                self.pos += 9;
                let Some(len) = self.rest().find("]]>") else {
                    return Err(self.malformed("CDATA section is not closed by ']]>'"));
                };
                push_line_normalized(&mut text, self.rest().get(..len).unwrap_or_default());
                self.pos += len + 3;
            } else if rest.starts_with("<!DOCTYPE") {
                return Err(TwimlError::DoctypeNotAllowed { offset: self.pos });
            } else if rest.starts_with("<!") {
                return Err(self.malformed("markup declaration that TwiML does not use"));
            } else if rest.starts_with("<?") {
                if self.at_xml_declaration() {
                    return Err(self.malformed("XML declaration is allowed only at the very start"));
                }
                self.pos += 2;
                self.name()?;
                self.skip_past("?>", "processing instruction is not closed by '?>'")?;
            } else if rest.starts_with("</") {
                let offset = self.pos;
                self.pos += 2;
                let name = self.name()?;
                self.skip_whitespace();
                if self.peek() != Some(b'>') {
                    return Err(self.malformed("end tag is not closed by '>'"));
                }
                self.pos += 1;
                let Some(mut element) = stack.pop() else {
                    return Err(TwimlError::Malformed { offset, what: "end tag without an open element" });
                };
                if element.name != name {
                    return Err(TwimlError::MismatchedTag {
                        offset,
                        expected: excerpt(&element.name),
                        found: excerpt(name),
                    });
                }
                push_text_node(&mut element.children, core::mem::take(&mut text));
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Element(element)),
                    None => root = Some(element),
                }
            } else if rest.starts_with('<') {
                if stack.is_empty() && root.is_some() {
                    return Err(self.malformed("a second element after the root element"));
                }
                let (element, closed) = self.start_tag(stack.len() + 1)?;
                if let Some(parent) = stack.last_mut() {
                    push_text_node(&mut parent.children, core::mem::take(&mut text));
                }
                match (closed, stack.last_mut()) {
                    (false, _) => stack.push(element),
                    (true, Some(parent)) => parent.children.push(Node::Element(element)),
                    (true, None) => root = Some(element),
                }
            } else if stack.is_empty() {
                let end = rest.find('<').unwrap_or(rest.len());
                if !is_blank(rest.get(..end).unwrap_or_default()) {
                    return Err(self.malformed("text outside the root element"));
                }
                self.pos += end;
            } else {
                self.char_data(&mut text)?;
            }
        }
        if !stack.is_empty() {
            return Err(self.malformed("document ends before every element is closed"));
        }
        root.ok_or(TwimlError::Malformed { offset: self.pos, what: "no root element" })
    }

    fn at_xml_declaration(&self) -> bool {
        let rest = self.rest();
        rest.starts_with("<?xml") && rest.as_bytes().get(5).is_none_or(|&b| is_xml_whitespace(b) || b == b'?')
    }

    /// Parses `<name attr="v" …>` or `<name …/>`; says whether it was closed.
    fn start_tag(&mut self, depth: usize) -> Result<(Element, bool), TwimlError> {
        self.pos += 1;
        let name = self.name()?;
        if depth > self.limits.max_depth {
            return Err(TwimlError::TooDeep { max: self.limits.max_depth });
        }
        self.elements += 1;
        if self.elements > self.limits.max_elements {
            return Err(TwimlError::TooManyElements { max: self.limits.max_elements });
        }
        let mut element = Element::new(name);
        loop {
            let separated = self.skip_whitespace();
            match self.peek() {
                Some(b'>') => {
                    self.pos += 1;
                    return Ok((element, false));
                }
                Some(b'/') => {
                    self.pos += 1;
                    if self.peek() != Some(b'>') {
                        return Err(self.malformed("expected '>' after '/' in a tag"));
                    }
                    self.pos += 1;
                    return Ok((element, true));
                }
                Some(_) if !separated => {
                    return Err(self.malformed("expected whitespace, '>' or '/>' in a tag"));
                }
                Some(_) => {
                    let attribute = self.name()?;
                    self.skip_whitespace();
                    if self.peek() != Some(b'=') {
                        return Err(self.malformed("expected '=' after an attribute name"));
                    }
                    self.pos += 1;
                    self.skip_whitespace();
                    let value = self.attribute_value()?;
                    if element.attributes.iter().any(|a| a.name == attribute) {
                        return Err(TwimlError::DuplicateAttribute {
                            element: excerpt(&element.name),
                            attribute: excerpt(attribute),
                        });
                    }
                    if element.attributes.len() >= self.limits.max_attributes {
                        return Err(TwimlError::TooManyAttributes {
                            element: excerpt(&element.name),
                            max: self.limits.max_attributes,
                        });
                    }
                    element.attributes.push(Attribute::new(attribute, value));
                }
                None => return Err(self.malformed("document ends inside a tag")),
            }
        }
    }

    fn attribute_value(&mut self) -> Result<String, TwimlError> {
        let quote = match self.peek() {
            Some(q @ (b'"' | b'\'')) => q,
            _ => return Err(self.malformed("attribute value must be quoted")),
        };
        self.pos += 1;
        let mut value = String::new();
        let mut run = self.pos;
        loop {
            match self.peek() {
                None => return Err(self.malformed("attribute value is not closed")),
                Some(b) if b == quote => {
                    value.push_str(self.src.get(run..self.pos).unwrap_or_default());
                    self.pos += 1;
                    return Ok(value);
                }
                Some(b'<') => return Err(self.malformed("'<' in an attribute value (write &lt;)")),
                Some(b'&') => {
                    value.push_str(self.src.get(run..self.pos).unwrap_or_default());
                    self.reference(&mut value)?;
                    run = self.pos;
                }
                Some(b @ (b'\t' | b'\n' | b'\r')) => {
                    value.push_str(self.src.get(run..self.pos).unwrap_or_default());
                    value.push(' ');
                    self.pos += 1;
                    if b == b'\r' && self.peek() == Some(b'\n') {
                        self.pos += 1;
                    }
                    run = self.pos;
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    /// Character data up to the next `<` (or the end), decoded into `text`.
    fn char_data(&mut self, text: &mut String) -> Result<(), TwimlError> {
        let mut run = self.pos;
        loop {
            match self.peek() {
                None | Some(b'<') => {
                    text.push_str(self.src.get(run..self.pos).unwrap_or_default());
                    return Ok(());
                }
                Some(b'&') => {
                    text.push_str(self.src.get(run..self.pos).unwrap_or_default());
                    self.reference(text)?;
                    run = self.pos;
                }
                Some(b'\r') => {
                    text.push_str(self.src.get(run..self.pos).unwrap_or_default());
                    text.push('\n');
                    self.pos += 1;
                    if self.peek() == Some(b'\n') {
                        self.pos += 1;
                    }
                    run = self.pos;
                }
                Some(b']') if self.rest().starts_with("]]>") => {
                    return Err(self.malformed("']]>' in text (write ]]&gt;)"));
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    /// Decodes the reference at `&` into `out`.
    fn reference(&mut self, out: &mut String) -> Result<(), TwimlError> {
        let amp = self.pos;
        self.pos += 1;
        if self.peek() == Some(b'#') {
            self.pos += 1;
            let radix = if self.peek() == Some(b'x') {
                self.pos += 1;
                16
            } else {
                10
            };
            let mut code: u32 = 0;
            let mut digits = 0usize;
            while let Some(d) = self.peek().and_then(|b| char::from(b).to_digit(radix)) {
                code = code.checked_mul(radix).and_then(|c| c.checked_add(d)).unwrap_or(u32::MAX);
                digits += 1;
                self.pos += 1;
            }
            if digits == 0 || self.peek() != Some(b';') {
                return Err(TwimlError::Malformed { offset: amp, what: "malformed character reference" });
            }
            self.pos += 1;
            match char::from_u32(code) {
                Some(c) if !is_forbidden_char(c) => {
                    out.push(c);
                    Ok(())
                }
                _ => Err(TwimlError::Malformed {
                    offset: amp,
                    what: "character reference to a character XML 1.0 does not allow",
                }),
            }
        } else {
            let Ok(name) = self.name() else {
                return Err(TwimlError::Malformed { offset: amp, what: "bare '&' (write &amp;)" });
            };
            if self.peek() != Some(b';') {
                return Err(TwimlError::Malformed { offset: amp, what: "entity reference without ';'" });
            }
            self.pos += 1;
            let c = match name {
                "amp" => '&',
                "lt" => '<',
                "gt" => '>',
                "quot" => '"',
                "apos" => '\'',
                _ => return Err(TwimlError::UnknownEntity { offset: amp, entity: excerpt(name) }),
            };
            out.push(c);
            Ok(())
        }
    }
}

/// Appends `raw` with CR LF and lone CR turned into LF.
fn push_line_normalized(out: &mut String, raw: &str) {
    let mut rest = raw;
    while let Some(i) = rest.find('\r') {
        out.push_str(rest.get(..i).unwrap_or_default());
        out.push('\n');
        rest = rest.get(i + 1..).unwrap_or_default();
        if let Some(after) = rest.strip_prefix('\n') {
            rest = after;
        }
    }
    out.push_str(rest);
}

/// Writes well-formed XML into a caller's `String`, escaping every value and
/// keeping within the same [`ParseLimits`] (default) the parser enforces on
/// structure, so whatever it writes reads back. Document size is not bounded
/// here: escaping can make a written document longer than the text it holds.
pub(crate) struct XmlWriter<'a> {
    out: &'a mut String,
    limits: ParseLimits,
    depth: usize,
    elements: usize,
    attributes: usize,
}

impl<'a> XmlWriter<'a> {
    pub(crate) fn new(out: &'a mut String) -> Self {
        XmlWriter { out, limits: ParseLimits::default(), depth: 0, elements: 0, attributes: 0 }
    }

    pub(crate) fn declaration(&mut self) {
        self.out.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    }

    /// Opens `<name`; finish with [`Self::end_empty`] or [`Self::end_start`].
    pub(crate) fn start(&mut self, name: &str) -> Result<(), TwimlError> {
        if !is_xml_name(name) {
            return Err(TwimlError::InvalidName { name: excerpt(name) });
        }
        self.depth += 1;
        if self.depth > self.limits.max_depth {
            return Err(TwimlError::TooDeep { max: self.limits.max_depth });
        }
        self.elements += 1;
        if self.elements > self.limits.max_elements {
            return Err(TwimlError::TooManyElements { max: self.limits.max_elements });
        }
        self.attributes = 0;
        self.out.push('<');
        self.out.push_str(name);
        Ok(())
    }

    fn attribute_name(&mut self, element: &str, name: &str) -> Result<(), TwimlError> {
        self.attributes += 1;
        if self.attributes > self.limits.max_attributes {
            return Err(TwimlError::TooManyAttributes {
                element: excerpt(element),
                max: self.limits.max_attributes,
            });
        }
        self.out.push(' ');
        self.out.push_str(name);
        self.out.push_str("=\"");
        Ok(())
    }

    /// Writes ` name="value"` with `value` escaped.
    pub(crate) fn attribute(&mut self, element: &str, name: &str, value: &str) -> Result<(), TwimlError> {
        self.attribute_name(element, name)?;
        let mut run = 0;
        for (i, c) in value.char_indices() {
            let escaped = match c {
                '&' => "&amp;",
                '<' => "&lt;",
                '>' => "&gt;",
                '"' => "&quot;",
                '\'' => "&apos;",
                '\t' => "&#9;",
                '\n' => "&#10;",
                '\r' => "&#13;",
                c if is_forbidden_char(c) => {
                    return Err(TwimlError::ForbiddenChar {
                        element: excerpt(element),
                        attribute: Some(excerpt(name)),
                        ch: c,
                    });
                }
                _ => continue,
            };
            self.out.push_str(value.get(run..i).unwrap_or_default());
            self.out.push_str(escaped);
            run = i + c.len_utf8();
        }
        self.out.push_str(value.get(run..).unwrap_or_default());
        self.out.push('"');
        Ok(())
    }

    /// Writes ` name="value"` for a value whose text needs no escaping
    /// (numbers, keywords).
    pub(crate) fn attribute_display(
        &mut self,
        element: &str,
        name: &str,
        value: impl core::fmt::Display,
    ) -> Result<(), TwimlError> {
        self.attribute_name(element, name)?;
        // Writing into a String cannot fail.
        let _ = write!(self.out, "{value}\"");
        Ok(())
    }

    /// Writes caller-supplied attributes after the modelled ones, refusing a
    /// name that is not an XML name, repeats, or shadows one of `modelled`
    /// (which a reader would take for the modelled attribute).
    pub(crate) fn extra_attributes(
        &mut self,
        element: &str,
        modelled: &[&str],
        extra: &[Attribute],
    ) -> Result<(), TwimlError> {
        for (i, a) in extra.iter().enumerate() {
            if !is_xml_name(&a.name) {
                return Err(TwimlError::InvalidName { name: excerpt(&a.name) });
            }
            let repeated = extra.get(..i).unwrap_or_default().iter().any(|b| b.name == a.name);
            if repeated || modelled.contains(&a.name.as_str()) {
                return Err(TwimlError::DuplicateAttribute {
                    element: excerpt(element),
                    attribute: excerpt(&a.name),
                });
            }
            self.attribute(element, &a.name, &a.value)?;
        }
        Ok(())
    }

    /// Closes a start tag as an empty element: `/>`.
    pub(crate) fn end_empty(&mut self) {
        self.out.push_str("/>");
        self.depth = self.depth.saturating_sub(1);
    }

    /// Closes a start tag that content follows: `>`.
    pub(crate) fn end_start(&mut self) {
        self.out.push('>');
    }

    /// Writes `</name>`.
    pub(crate) fn close(&mut self, name: &str) {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
        self.depth = self.depth.saturating_sub(1);
    }

    /// Writes escaped character data inside `element`.
    pub(crate) fn text(&mut self, element: &str, text: &str) -> Result<(), TwimlError> {
        let mut run = 0;
        for (i, c) in text.char_indices() {
            let escaped = match c {
                '&' => "&amp;",
                '<' => "&lt;",
                '>' => "&gt;",
                '"' => "&quot;",
                // A literal CR would read back as LF.
                '\r' => "&#13;",
                c if is_forbidden_char(c) => {
                    return Err(TwimlError::ForbiddenChar {
                        element: excerpt(element),
                        attribute: None,
                        ch: c,
                    });
                }
                _ => continue,
            };
            self.out.push_str(text.get(run..i).unwrap_or_default());
            self.out.push_str(escaped);
            run = i + c.len_utf8();
        }
        self.out.push_str(text.get(run..).unwrap_or_default());
        Ok(())
    }

    /// Writes `name` with `attributes` and the mixed content `children`.
    pub(crate) fn mixed(
        &mut self,
        name: &str,
        children: &[Node],
        attributes: impl FnOnce(&mut Self) -> Result<(), TwimlError>,
    ) -> Result<(), TwimlError> {
        self.start(name)?;
        attributes(self)?;
        if children.is_empty() {
            self.end_empty();
            return Ok(());
        }
        self.end_start();
        self.nodes(name, children)?;
        self.close(name);
        Ok(())
    }

    pub(crate) fn nodes(&mut self, parent: &str, nodes: &[Node]) -> Result<(), TwimlError> {
        for node in nodes {
            match node {
                Node::Text(t) => self.text(parent, t)?,
                Node::Element(e) => self.element(e)?,
            }
        }
        Ok(())
    }

    /// Writes a generic element and its subtree.
    pub(crate) fn element(&mut self, e: &Element) -> Result<(), TwimlError> {
        self.mixed(&e.name, &e.children, |w| w.extra_attributes(&e.name, &[], &e.attributes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Element, TwimlError> {
        parse_document(s, &ParseLimits::default())
    }

    #[test]
    fn parses_nested_elements_attributes_and_text() {
        let root = parse(r#"<a x="1" y='two'><b/>hi<c z="&lt;&amp;&gt;&quot;&apos;">t</c></a>"#).unwrap();
        let expected = Element::new("a")
            .attribute("x", "1")
            .attribute("y", "two")
            .child(Element::new("b"))
            .text("hi")
            .child(Element::new("c").attribute("z", "<&>\"'").text("t"));
        assert_eq!(root, expected);
    }

    #[test]
    fn decodes_numeric_references_and_cdata_and_skips_comments_and_pis() {
        let root = parse("<?xml version=\"1.0\"?><!-- c --><a>&#65;&#x42;&#x1F600;<!--x--><![CDATA[<&>]]><?pi data?>z</a><!-- after -->")
            .unwrap();
        assert_eq!(root, Element::new("a").text("AB\u{1F600}<&>z"));
    }

    #[test]
    fn normalizes_line_ends_in_text_and_whitespace_in_attributes() {
        let root = parse("<a v=\"1\t2\r\n3\n4&#10;5\">x\r\ny\rz&#13;</a>").unwrap();
        assert_eq!(root, Element::new("a").attribute("v", "1 2 3 4\n5").text("x\ny\nz\r"));
    }

    #[test]
    fn rejects_what_is_not_well_formed() {
        for (doc, what) in [
            ("", "no root element"),
            ("<a>", "document ends before every element is closed"),
            ("<a></b>", ""),
            ("<a x=1/>", "attribute value must be quoted"),
            ("<a x='1' x='2'/>", ""),
            ("<a>&bogus;</a>", ""),
            ("<a>& </a>", "bare '&' (write &amp;)"),
            ("<a>&#0;</a>", "character reference to a character XML 1.0 does not allow"),
            ("<a>&#xD800;</a>", "character reference to a character XML 1.0 does not allow"),
            ("<a>&#99999999999;</a>", "character reference to a character XML 1.0 does not allow"),
            ("<a>&#;</a>", "malformed character reference"),
            ("<a>\u{1}</a>", "character that XML 1.0 does not allow"),
            ("<a/><b/>", "a second element after the root element"),
            ("x<a/>", "text outside the root element"),
            ("<a/>x", "text outside the root element"),
            ("<a>]]></a>", "']]>' in text (write ]]&gt;)"),
            ("<a x='<'/>", "'<' in an attribute value (write &lt;)"),
            ("<a x='1'y='2'/>", "expected whitespace, '>' or '/>' in a tag"),
            ("<!DOCTYPE a><a/>", ""),
            ("<a/><?xml version='1.0'?>", "XML declaration is allowed only at the very start"),
            ("<1a/>", "expected an element or attribute name"),
            ("<a><!-- open</a>", "comment is not closed by '-->'"),
        ] {
            let err = parse(doc).expect_err(doc);
            if !what.is_empty() {
                assert!(
                    matches!(err, TwimlError::Malformed { what: got, .. } if got == what),
                    "{doc}: {err:?}"
                );
            }
        }
        assert!(matches!(parse("<a></b>"), Err(TwimlError::MismatchedTag { .. })));
        assert!(matches!(parse("<a x='1' x='2'/>"), Err(TwimlError::DuplicateAttribute { .. })));
        assert!(matches!(parse("<a>&bogus;</a>"), Err(TwimlError::UnknownEntity { .. })));
        assert!(matches!(parse("<!DOCTYPE a><a/>"), Err(TwimlError::DoctypeNotAllowed { offset: 0 })));
    }

    #[test]
    fn enforces_limits() {
        let default = ParseLimits::default();
        let limits = ParseLimits { max_bytes: 10, ..default };
        assert_eq!(
            parse_document("<a>0123456789</a>", &limits),
            Err(TwimlError::TooLarge { len: 17, max: 10 })
        );
        assert!(parse_document("<a>012</a>", &limits).is_ok());
        let limits = ParseLimits { max_depth: 2, ..default };
        assert_eq!(parse_document("<a><b><c/></b></a>", &limits), Err(TwimlError::TooDeep { max: 2 }));
        assert!(parse_document("<a><b/></a>", &limits).is_ok());
        let limits = ParseLimits { max_elements: 2, ..default };
        assert_eq!(parse_document("<a><b/><b/></a>", &limits), Err(TwimlError::TooManyElements { max: 2 }));
        assert!(parse_document("<a><b/></a>", &limits).is_ok());
        let limits = ParseLimits { max_attributes: 1, ..default };
        assert_eq!(
            parse_document("<a x='1' y='2'/>", &limits),
            Err(TwimlError::TooManyAttributes { element: "a".into(), max: 1 })
        );
        assert!(parse_document("<a x='1'/>", &limits).is_ok());
    }

    #[test]
    fn names_follow_xml() {
        assert!(is_xml_name("statusCallback"));
        assert!(is_xml_name("amazon:effect"));
        assert!(is_xml_name("say-as"));
        assert!(is_xml_name("Ünïcode"));
        assert!(!is_xml_name(""));
        assert!(!is_xml_name("-a"));
        assert!(!is_xml_name("a b"));
        assert!(!is_xml_name("a\"b"));
    }

    #[test]
    fn writer_escapes_text_and_attributes() {
        let mut out = String::new();
        let mut w = XmlWriter::new(&mut out);
        let e = Element::new("a").attribute("v", "<&>\"'\t\n\r").text("<&>\"'\t\n\r");
        w.element(&e).unwrap();
        assert_eq!(out, "<a v=\"&lt;&amp;&gt;&quot;&apos;&#9;&#10;&#13;\">&lt;&amp;&gt;&quot;'\t\n&#13;</a>");
    }

    #[test]
    fn writer_refuses_forbidden_chars_bad_names_and_duplicates() {
        let write = |e: &Element| {
            let mut out = String::new();
            XmlWriter::new(&mut out).element(e)
        };
        assert_eq!(
            write(&Element::new("a").text("x\u{0}")),
            Err(TwimlError::ForbiddenChar { element: "a".into(), attribute: None, ch: '\u{0}' })
        );
        assert_eq!(
            write(&Element::new("a").attribute("v", "\u{FFFF}")),
            Err(TwimlError::ForbiddenChar {
                element: "a".into(),
                attribute: Some("v".into()),
                ch: '\u{FFFF}'
            })
        );
        assert_eq!(write(&Element::new("a b")), Err(TwimlError::InvalidName { name: "a b".into() }));
        assert_eq!(
            write(&Element::new("a").attribute("v", "1").attribute("v", "2")),
            Err(TwimlError::DuplicateAttribute { element: "a".into(), attribute: "v".into() })
        );
        let mut deep = Element::new("z");
        for _ in 0..ParseLimits::default().max_depth {
            deep = Element::new("z").child(deep);
        }
        assert!(matches!(write(&deep), Err(TwimlError::TooDeep { .. })));
    }

    #[test]
    fn text_builder_keeps_content_in_parsed_form() {
        let e = Element::new("a").text("").text("x").text("y");
        assert_eq!(e.children, vec![Node::Text("xy".into())]);
        assert_eq!(
            Element::new("a").text("1").child(Element::new("b").text("2")).text("3").text_content(),
            "123"
        );
    }
}
