//! SIP messages (RFC 3261 §7): the model, a strict bounded parser and the
//! writer. The writer always emits `Content-Length`, so [`Message`] never
//! stores one and `parse(write(m)) == m`.

use core::fmt;
use core::fmt::Write as _;

use super::{MAX_HEADERS, MAX_LINE_BYTES, MAX_MESSAGE_BYTES, SipError};

/// A SIP method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// Starts a session.
    Invite,
    /// Confirms a final response to INVITE.
    Ack,
    /// Ends a session.
    Bye,
    /// Cancels a pending INVITE.
    Cancel,
    /// Asks for capabilities; used as a keep-alive.
    Options,
    /// Registers a contact.
    Register,
    /// Updates a session without a new INVITE (RFC 3311).
    Update,
    /// Mid-dialog information (RFC 6086).
    Info,
    /// Acknowledges a reliable provisional response (RFC 3262).
    Prack,
    /// Any other token, as written.
    Other(String),
}

impl Method {
    const KNOWN: [(Method, &'static str); 9] = [
        (Method::Invite, "INVITE"),
        (Method::Ack, "ACK"),
        (Method::Bye, "BYE"),
        (Method::Cancel, "CANCEL"),
        (Method::Options, "OPTIONS"),
        (Method::Register, "REGISTER"),
        (Method::Update, "UPDATE"),
        (Method::Info, "INFO"),
        (Method::Prack, "PRACK"),
    ];

    /// The method token (methods are case-sensitive, RFC 3261 §7.1).
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Other(token) => token,
            known => Self::KNOWN.iter().find(|(m, _)| m == known).map_or("", |(_, s)| s),
        }
    }

    /// Parses a method token.
    #[must_use]
    pub fn from_token(token: &str) -> Option<Self> {
        if token.is_empty() || token.len() > 32 || !token.bytes().all(is_token_char) {
            return None;
        }
        Some(
            Self::KNOWN
                .into_iter()
                .find(|(_, s)| *s == token)
                .map_or_else(|| Self::Other(token.to_owned()), |(m, _)| m),
        )
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// RFC 3261 `token` characters.
pub(crate) fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// `METHOD uri SIP/2.0`
    Request {
        /// The method.
        method: Method,
        /// The Request-URI as written (checked to be a `sip:`/`sips:` URI).
        uri: String,
    },
    /// `SIP/2.0 status reason`
    Response {
        /// 100–699.
        status: u16,
        /// The reason phrase (may be empty).
        reason: String,
    },
}

/// One header field, its name in canonical long form (compact forms such as
/// `v` or `i` are expanded on parsing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Canonical name (`Via`, `Call-ID`, …) or the name as written when unknown.
    pub name: String,
    /// The value, trimmed, on one line.
    pub value: String,
}

/// A SIP request or response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Request or status line.
    pub start: StartLine,
    /// Headers in order, without `Content-Length` (the writer adds it).
    pub headers: Vec<Header>,
    /// The body (usually SDP).
    pub body: Vec<u8>,
}

/// Compact forms (RFC 3261 §7.3.3, RFC 4028) and canonical spellings.
const NAMES: &[(&str, Option<char>)] = &[
    ("Via", Some('v')),
    ("From", Some('f')),
    ("To", Some('t')),
    ("Call-ID", Some('i')),
    ("CSeq", None),
    ("Contact", Some('m')),
    ("Content-Type", Some('c')),
    ("Content-Length", Some('l')),
    ("Content-Encoding", Some('e')),
    ("Subject", Some('s')),
    ("Supported", Some('k')),
    ("Session-Expires", Some('x')),
    ("Event", Some('o')),
    ("Refer-To", Some('r')),
    ("Allow-Events", Some('u')),
    ("Max-Forwards", None),
    ("Route", None),
    ("Record-Route", None),
    ("Min-SE", None),
    ("Require", None),
    ("Allow", None),
    ("WWW-Authenticate", None),
    ("Proxy-Authenticate", None),
    ("Authorization", None),
    ("Proxy-Authorization", None),
    ("User-Agent", None),
    ("Expires", None),
];

/// The canonical spelling of a header name (compact forms expanded).
#[must_use]
pub fn canonical_name(name: &str) -> Option<&'static str> {
    if name.len() == 1 {
        let c = name.as_bytes()[0].to_ascii_lowercase() as char;
        if let Some((long, _)) = NAMES.iter().find(|(_, short)| *short == Some(c)) {
            return Some(long);
        }
    }
    NAMES.iter().find(|(long, _)| long.eq_ignore_ascii_case(name)).map(|(long, _)| *long)
}

impl Message {
    /// A request with no headers yet.
    #[must_use]
    pub fn request(method: Method, uri: impl Into<String>) -> Self {
        Self { start: StartLine::Request { method, uri: uri.into() }, headers: Vec::new(), body: Vec::new() }
    }

    /// A response with no headers yet; the reason is the standard one.
    #[must_use]
    pub fn response(status: u16) -> Self {
        Self {
            start: StartLine::Response { status, reason: reason_phrase(status).to_owned() },
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Appends a header (builder style).
    #[must_use]
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.push(name, value);
        self
    }

    /// Appends a header.
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        let name = canonical_name(name).map_or_else(|| name.to_owned(), str::to_owned);
        self.headers.push(Header { name, value: value.into() });
    }

    /// The method of a request, or of the CSeq of a response.
    #[must_use]
    pub fn method(&self) -> Option<Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method.clone()),
            StartLine::Response { .. } => self.cseq().map(|(_, m)| m),
        }
    }

    /// The status code of a response.
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { status, .. } => Some(status),
            StartLine::Request { .. } => None,
        }
    }

    /// The first value of a header (compact names accepted).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).next()
    }

    /// Every value of a header, in order, each header line whole.
    pub fn header_values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let name = canonical_name(name).map_or_else(|| name.to_owned(), str::to_owned);
        self.headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(&name)).map(|h| h.value.as_str())
    }

    /// Every element of a comma-list header (`Via`, `Route`, `Contact`),
    /// across all its lines, in order.
    pub fn list_values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        self.header_values(name).flat_map(split_list)
    }

    /// Removes every line of a header.
    pub fn remove(&mut self, name: &str) {
        let name = canonical_name(name).map_or_else(|| name.to_owned(), str::to_owned);
        self.headers.retain(|h| !h.name.eq_ignore_ascii_case(&name));
    }

    /// `Call-ID`.
    #[must_use]
    pub fn call_id(&self) -> Option<&str> {
        self.header("Call-ID")
    }

    /// `CSeq` number and method.
    #[must_use]
    pub fn cseq(&self) -> Option<(u32, Method)> {
        let (number, method) = self.header("CSeq")?.split_once([' ', '\t'])?;
        Some((number.parse().ok()?, Method::from_token(method.trim())?))
    }

    /// The top `Via`'s `branch` parameter.
    #[must_use]
    pub fn top_branch(&self) -> Option<&str> {
        param(self.list_values("Via").next()?, "branch")
    }

    /// Writes the message, with `Content-Length`, into `out` (appending).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut head = String::with_capacity(512);
        // Writing to a String cannot fail.
        let _ = match &self.start {
            StartLine::Request { method, uri } => write!(head, "{method} {uri} SIP/2.0\r\n"),
            StartLine::Response { status, reason } => write!(head, "SIP/2.0 {status} {reason}\r\n"),
        };
        for header in self.headers.iter().filter(|h| h.name != "Content-Length") {
            let _ = write!(head, "{}: {}\r\n", header.name, header.value);
        }
        let _ = write!(head, "Content-Length: {}\r\n\r\n", self.body.len());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(&self.body);
    }

    /// The message as bytes.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body.len());
        self.write_to(&mut out);
        out
    }

    /// Parses one datagram (RFC 3261 §18.3: without `Content-Length` the body
    /// is the rest; bytes past `Content-Length` are dropped).
    pub fn parse(input: &[u8]) -> Result<Self, SipError> {
        parse_framed(input, false).map(|(message, _)| message)
    }
}

/// The standard reason phrase of a status code.
#[must_use]
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        183 => "Session Progress",
        200 => "OK",
        302 => "Moved Temporarily",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        420 => "Bad Extension",
        422 => "Session Interval Too Small",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        603 => "Decline",
        _ => match status / 100 {
            1 => "Trying",
            2 => "OK",
            3 => "Redirection",
            4 => "Client Error",
            5 => "Server Error",
            _ => "Global Failure",
        },
    }
}

/// Splits a comma list, keeping commas inside quotes and `<…>` together.
pub(crate) fn split_list(value: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(value);
    core::iter::from_fn(move || {
        loop {
            let text = rest?;
            let (mut quoted, mut angle, mut escaped) = (false, false, false);
            let mut end = text.len();
            for (i, c) in text.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' if quoted => escaped = true,
                    '"' => quoted = !quoted,
                    '<' if !quoted => angle = true,
                    '>' if !quoted => angle = false,
                    ',' if !quoted && !angle => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
            }
            rest = text.get(end + 1..).filter(|_| end < text.len());
            let item = text[..end].trim();
            if !item.is_empty() {
                return Some(item);
            }
        }
    })
}

/// A `;name=value` parameter of a header value (after any `<…>`), unquoted.
#[must_use]
pub fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    let params = match value.rfind('>') {
        Some(close) => &value[close + 1..],
        None => value,
    };
    params.split(';').skip(1).find_map(|p| {
        let (n, v) = p.split_once('=').unwrap_or((p, ""));
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim().trim_matches('"'))
    })
}

/// The URI of a name-addr (`"Alice" <sip:a@h>;tag=x`) or addr-spec (`sip:a@h;tag=x`).
#[must_use]
pub fn name_addr_uri(value: &str) -> Option<&str> {
    match (value.find('<'), value.rfind('>')) {
        (Some(open), Some(close)) if open < close => Some(value[open + 1..close].trim()),
        (None, None) => Some(value.split(';').next()?.trim()),
        _ => None,
    }
}

/// Finds the end of the header block: the index just past the first blank
/// line, whether written CRLF CRLF or (leniently) LF LF.
fn header_end(input: &[u8]) -> Option<usize> {
    let crlf = memchr::memmem::find(input, b"\r\n\r\n").map(|i| i + 4);
    let lf = memchr::memmem::find(input, b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Parses one message from the front of `input`. With `stream`,
/// `Content-Length` is required and the consumed length is returned so the
/// caller can keep the rest; otherwise the datagram rules apply.
pub(crate) fn parse_framed(input: &[u8], stream: bool) -> Result<(Message, usize), SipError> {
    let Some(head_len) = header_end(input) else {
        return Err(if input.len() > MAX_MESSAGE_BYTES {
            SipError::TooLarge { len: input.len() }
        } else {
            SipError::Incomplete
        });
    };
    if head_len > MAX_MESSAGE_BYTES {
        return Err(SipError::TooLarge { len: head_len });
    }
    let head = core::str::from_utf8(&input[..head_len])
        .map_err(|_| SipError::Malformed { line: 0, reason: "header block is not UTF-8" })?;
    let (start, headers, content_length) = parse_head(head)?;
    let available = input.len() - head_len;
    let body_len = match content_length {
        Some(len) if len > available => {
            return Err(if stream { SipError::Incomplete } else { SipError::BadContentLength });
        }
        Some(len) => len,
        None if stream => return Err(SipError::BadContentLength),
        None => available,
    };
    if head_len + body_len > MAX_MESSAGE_BYTES {
        return Err(SipError::TooLarge { len: head_len + body_len });
    }
    let message = Message { start, headers, body: input[head_len..head_len + body_len].to_vec() };
    check_mandatory(&message)?;
    Ok((message, head_len + body_len))
}

type Head = (StartLine, Vec<Header>, Option<usize>);

fn parse_head(head: &str) -> Result<Head, SipError> {
    let has_control = |text: &str| text.bytes().any(|b| b.is_ascii_control() && b != b'\t');
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).enumerate();
    let (_, first) = lines.next().ok_or(SipError::Incomplete)?;
    if first.len() > MAX_LINE_BYTES {
        return Err(SipError::LineTooLong { line: 1 });
    }
    let start = parse_start_line(first)?;
    let mut headers: Vec<Header> = Vec::new();
    let mut content_length = None;
    // Content-Length is kept apart from the headers, so a continuation
    // after it would silently extend the header before it.
    let mut length_line = false;
    for (index, line) in lines {
        let number = index + 1;
        if line.is_empty() {
            break;
        }
        if line.len() > MAX_LINE_BYTES {
            return Err(SipError::LineTooLong { line: number });
        }
        if line.starts_with([' ', '\t']) {
            if length_line {
                return Err(SipError::Malformed { line: number, reason: "Content-Length is folded" });
            }
            // Obsolete line folding (RFC 3261 §7.3.1): continues the previous value.
            let previous = headers
                .last_mut()
                .ok_or(SipError::Malformed { line: number, reason: "continuation line before any header" })?;
            if previous.value.len() + line.len() > MAX_LINE_BYTES {
                return Err(SipError::LineTooLong { line: number });
            }
            // The continuation is part of the value: the same rules apply.
            let more = line.trim_matches([' ', '\t']);
            if has_control(more) {
                return Err(SipError::Malformed {
                    line: number,
                    reason: "control character in header value",
                });
            }
            if !more.is_empty() {
                if !previous.value.is_empty() {
                    previous.value.push(' ');
                }
                previous.value.push_str(more);
            }
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(SipError::Malformed { line: number, reason: "header line has no `:`" })?;
        let name = name.trim_end_matches([' ', '\t']);
        if name.is_empty() || !name.bytes().all(is_token_char) {
            return Err(SipError::Malformed { line: number, reason: "header name is not a token" });
        }
        let value = value.trim_matches([' ', '\t']);
        if has_control(value) {
            return Err(SipError::Malformed { line: number, reason: "control character in header value" });
        }
        let canonical = canonical_name(name);
        length_line = canonical == Some("Content-Length");
        if length_line {
            let len = value.parse::<usize>().ok().filter(|_| value.bytes().all(|b| b.is_ascii_digit()));
            let len =
                len.ok_or(SipError::Malformed { line: number, reason: "Content-Length is not a number" })?;
            if content_length.is_some_and(|l| l != len) {
                return Err(SipError::Malformed {
                    line: number,
                    reason: "two different Content-Length values",
                });
            }
            content_length = Some(len);
            continue;
        }
        if headers.len() == MAX_HEADERS {
            return Err(SipError::TooManyHeaders);
        }
        headers.push(Header {
            name: canonical.map_or_else(|| name.to_owned(), str::to_owned),
            value: value.to_owned(),
        });
    }
    Ok((start, headers, content_length))
}

fn parse_start_line(line: &str) -> Result<StartLine, SipError> {
    let bad = |reason| SipError::Malformed { line: 1, reason };
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let status = code
            .parse::<u16>()
            .ok()
            .filter(|s| (100..=699).contains(s) && code.len() == 3)
            .ok_or(bad("status code is not 100 to 699"))?;
        if reason.bytes().any(|b| b.is_ascii_control()) {
            return Err(bad("control character in reason phrase"));
        }
        return Ok(StartLine::Response { status, reason: reason.to_owned() });
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("request line is not `METHOD URI SIP/2.0`"));
    };
    if version != "SIP/2.0" {
        return Err(bad("version is not SIP/2.0"));
    }
    let method = Method::from_token(method).ok_or(bad("method is not a token"))?;
    super::SipUri::parse(uri)?;
    Ok(StartLine::Request { method, uri: uri.to_owned() })
}

/// RFC 3261 §8.1.1: To, From, CSeq, Call-ID and Via are required; CSeq must
/// name the request's method.
fn check_mandatory(message: &Message) -> Result<(), SipError> {
    for name in ["To", "From", "Call-ID", "Via"] {
        if message.header(name).is_none_or(str::is_empty) {
            return Err(SipError::MissingHeader { name });
        }
    }
    let (_, method) = message.cseq().ok_or(SipError::MissingHeader { name: "CSeq" })?;
    if let StartLine::Request { method: request_method, .. } = &message.start
        && *request_method != method
    {
        return Err(SipError::Malformed { line: 0, reason: "CSeq method differs from the request method" });
    }
    Ok(())
}

/// Cuts a TCP byte stream into messages (RFC 3261 §18.3: `Content-Length`
/// frames them). Bounded: at most [`MAX_MESSAGE_BYTES`] are buffered.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buffer: Vec<u8>,
}

impl StreamFramer {
    /// Appends received bytes. Fails (and the connection should be closed)
    /// when more than one message's worth is pending.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), SipError> {
        if self.buffer.len() + bytes.len() > 2 * MAX_MESSAGE_BYTES {
            return Err(SipError::TooLarge { len: self.buffer.len() + bytes.len() });
        }
        self.buffer.extend_from_slice(bytes);
        Ok(())
    }

    /// The next complete message, `Ok(None)` when more bytes are needed.
    /// Keep-alive CRLFs between messages (RFC 5626) are skipped. After an
    /// error the stream cannot be resynchronised: close it.
    pub fn next_message(&mut self) -> Result<Option<Message>, SipError> {
        let blank = self.buffer.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
        self.buffer.drain(..blank);
        if self.buffer.is_empty() {
            return Ok(None);
        }
        match parse_framed(&self.buffer, true) {
            Ok((message, used)) => {
                self.buffer.drain(..used);
                Ok(Some(message))
            }
            Err(SipError::Incomplete) if self.buffer.len() <= MAX_MESSAGE_BYTES => Ok(None),
            Err(SipError::Incomplete) => Err(SipError::TooLarge { len: self.buffer.len() }),
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) const INVITE: &str = "INVITE sip:bob@192.0.2.4 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx\r\n\
        v: SIP/2.0/TCP 10.0.0.2;branch=z9hG4bKy\r\n\
        Max-Forwards: 70\r\n\
        To: Bob <sip:bob@192.0.2.4>\r\n\
        f: \"Alice, A.\" <sip:alice@192.0.2.1>;tag=1928301774\r\n\
        i: a84b4c76e66710@pc33.atlanta.com\r\n\
        CSeq: 314159 INVITE\r\n\
        Contact: <sip:alice@192.0.2.1>\r\n\
        Subject: folded\r\n  value\r\n\
        c: application/sdp\r\n\
        l: 4\r\n\r\nv=0\r\nextra";

    #[test]
    fn a_folded_line_follows_the_rules_of_the_value_it_continues() {
        // Found by the sip_parse fuzz target: a NUL byte on a continuation
        // line parsed, and the message written back then did not.
        let nul = INVITE.replace("  value", "  va\0lue");
        assert!(matches!(
            Message::parse(nul.as_bytes()),
            Err(SipError::Malformed { reason: "control character in header value", .. })
        ));
        let blank = INVITE.replace("  value", " \t ");
        let blank = Message::parse(blank.as_bytes()).unwrap();
        assert_eq!(blank.header("Subject"), Some("folded"));
        assert_eq!(Message::parse(&blank.to_bytes()).as_ref(), Ok(&blank));
        let folded_length = INVITE.replace("l: 4\r\n", "l: 4\r\n 5\r\n");
        assert!(matches!(
            Message::parse(folded_length.as_bytes()),
            Err(SipError::Malformed { reason: "Content-Length is folded", .. })
        ));
    }

    #[test]
    fn parses_compact_folded_multi_via() {
        let m = Message::parse(INVITE.as_bytes()).unwrap();
        assert_eq!(m.method(), Some(Method::Invite));
        assert_eq!(m.list_values("Via").count(), 3);
        assert_eq!(m.top_branch(), Some("z9hG4bK776asdhds"));
        assert_eq!(m.call_id(), Some("a84b4c76e66710@pc33.atlanta.com"));
        assert_eq!(m.cseq(), Some((314_159, Method::Invite)));
        assert_eq!(m.header("Subject"), Some("folded value"));
        assert_eq!(param(m.header("From").unwrap(), "tag"), Some("1928301774"));
        assert_eq!(name_addr_uri(m.header("f").unwrap()), Some("sip:alice@192.0.2.1"));
        assert_eq!(m.body, b"v=0\r");
        let again = Message::parse(&m.to_bytes()).unwrap();
        assert_eq!(again, m);
    }

    #[test]
    fn refuses_malformed_and_oversize() {
        let bad = |text: &str| Message::parse(text.as_bytes()).unwrap_err();
        assert_eq!(bad("INVITE sip:a@h SIP/2.0\r\n"), SipError::Incomplete);
        assert!(matches!(bad("INVITE sip:a@h SIP/3.0\r\n\r\n"), SipError::Malformed { line: 1, .. }));
        assert!(matches!(bad("SIP/2.0 99 Odd\r\n\r\n"), SipError::Malformed { line: 1, .. }));
        assert!(matches!(bad("INVITE http://h SIP/2.0\r\n\r\n"), SipError::BadUri { .. }));
        let base = INVITE.replace("l: 4\r\n", "");
        assert_eq!(
            bad(&base.replace("i: a84b4c76e66710@pc33.atlanta.com\r\n", "")),
            SipError::MissingHeader { name: "Call-ID" }
        );
        assert!(matches!(
            bad(&base.replace("CSeq: 314159 INVITE", "CSeq: 1 BYE")),
            SipError::Malformed { .. }
        ));
        assert_eq!(bad(&INVITE.replace("l: 4", "l: 400")), SipError::BadContentLength);
        assert!(matches!(bad(&INVITE.replace("l: 4", "l: 4x")), SipError::Malformed { .. }));
        assert!(matches!(
            bad(&INVITE.replace("Max-Forwards: 70", "Max Forwards: 70")),
            SipError::Malformed { .. }
        ));
        let long = INVITE.replace("Subject: folded", &format!("Subject: {}", "x".repeat(MAX_LINE_BYTES)));
        assert!(matches!(bad(&long), SipError::LineTooLong { .. }));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-H{i}: v\r\n")).collect();
        assert_eq!(bad(&INVITE.replace("Max-Forwards: 70\r\n", &many)), SipError::TooManyHeaders);
        assert!(matches!(bad(&"x".repeat(MAX_MESSAGE_BYTES + 1)), SipError::TooLarge { .. }));
        assert!(matches!(bad("INVITE sip:a@h SIP/2.0\r\nVia: a\x01b\r\n\r\n"), SipError::Malformed { .. }));
    }

    #[test]
    fn frames_a_tcp_stream() {
        let one = INVITE.as_bytes();
        let mut framer = StreamFramer::default();
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend_from_slice(one);
        stream.extend_from_slice(one);
        let (mut got, mut failed) = (Vec::new(), None);
        for chunk in stream.chunks(7) {
            framer.push(chunk).unwrap();
            loop {
                match framer.next_message() {
                    Ok(Some(m)) => got.push(m),
                    Ok(None) => break,
                    Err(e) => {
                        failed.get_or_insert(e);
                        break;
                    }
                }
            }
        }
        // The bytes past Content-Length ("extra") prefix the second message
        // and make it malformed: the framer must say so.
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, b"v=0\r");
        assert!(matches!(failed, Some(SipError::Malformed { .. })), "{failed:?}");
        let mut framer = StreamFramer::default();
        let exact = INVITE.replace("extra", "");
        framer.push(exact.as_bytes()).unwrap();
        framer.push(exact.as_bytes()).unwrap();
        assert!(framer.next_message().unwrap().is_some());
        assert!(framer.next_message().unwrap().is_some());
        assert!(framer.next_message().unwrap().is_none());
        let mut framer = StreamFramer::default();
        framer.push(INVITE.replace("l: 4\r\n", "").as_bytes()).unwrap();
        assert_eq!(framer.next_message(), Err(SipError::BadContentLength));
        let mut framer = StreamFramer::default();
        assert!(framer.push(&vec![b'x'; 2 * MAX_MESSAGE_BYTES + 1]).is_err());
    }

    #[test]
    fn the_first_blank_line_ends_the_headers() {
        let lf = "OPTIONS sip:a@h SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nFrom: <sip:a@h>;tag=1\nTo: <sip:a@h>\n\
            Call-ID: c\nCSeq: 1 OPTIONS\n\nbody\r\n\r\nmore";
        let m = Message::parse(lf.as_bytes()).unwrap();
        assert_eq!(m.body, b"body\r\n\r\nmore");
    }

    #[test]
    fn splits_lists_respecting_quotes() {
        let items: Vec<_> = split_list(r#""a, b" <sip:x@h;p=1,2>, <sip:y@h> , ,z"#).collect();
        assert_eq!(items, vec![r#""a, b" <sip:x@h;p=1,2>"#, "<sip:y@h>", "z"]);
    }

    fn token() -> impl Strategy<Value = String> {
        "[A-Za-z0-9.!%*_+~-]{1,12}"
    }

    fn value() -> impl Strategy<Value = String> {
        "[!-~]([ -~]{0,40}[!-~])?"
    }

    fn message() -> impl Strategy<Value = Message> {
        let start = prop_oneof![
            (token(), "[a-z0-9]{1,8}").prop_map(|(m, h)| StartLine::Request {
                method: Method::from_token(&m).unwrap(),
                uri: format!("sip:u@{h}")
            }),
            (100u16..700, "[ -~]{0,20}").prop_map(|(status, reason)| StartLine::Response { status, reason }),
        ];
        let extra = proptest::collection::vec(("X-[A-Za-z0-9-]{1,10}", value()), 0..8);
        (start, token(), 0u32..u32::MAX, extra, proptest::collection::vec(any::<u8>(), 0..200)).prop_map(
            |(start, call_id, cseq, extra, body)| {
                let method = match &start {
                    StartLine::Request { method, .. } => method.clone(),
                    StartLine::Response { .. } => Method::Invite,
                };
                let mut m = Message { start, headers: Vec::new(), body };
                m.push("Via", "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKabc");
                m.push("From", "<sip:a@h>;tag=1");
                m.push("To", "<sip:b@h>");
                m.push("Call-ID", call_id);
                m.push("CSeq", format!("{cseq} {method}"));
                for (name, value) in extra {
                    m.push(&name, value);
                }
                m
            },
        )
    }

    proptest! {
        #[test]
        fn write_then_parse_round_trips(m in message()) {
            let bytes = m.to_bytes();
            prop_assert_eq!(&Message::parse(&bytes).unwrap(), &m);
            let mut framer = StreamFramer::default();
            framer.push(&bytes).unwrap();
            prop_assert_eq!(&framer.next_message().unwrap().unwrap(), &m);
        }

        #[test]
        fn damaged_messages_never_panic(m in message(), edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
            let mut bytes = m.to_bytes();
            for (at, byte) in edits {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            if let Ok(parsed) = Message::parse(&bytes) {
                prop_assert_eq!(Message::parse(&parsed.to_bytes()).unwrap(), parsed);
            }
        }
    }
}
