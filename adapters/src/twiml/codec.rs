//! Typed TwiML to XML text and back.

use core::fmt;
use core::str::FromStr;

use super::error::{TwimlError, excerpt};
use super::model::{
    CallProgressEvent, Connect, Dial, DialNoun, DialRecord, DialTarget, Gather, GatherInput, GatherPrompt,
    Hangup, HttpMethod, MediaNoun, Number, Parameter, Pause, Play, Record, RecordTrim, Redirect, Reject,
    RejectReason, Response, Say, SpeechTimeout, Start, Stop, StopNoun, StopStream, Stream, StreamTrack,
    StreamUrl, Verb,
};
use super::xml::{Attribute, Element, Node, ParseLimits, XmlWriter, is_blank, parse_document};

// Modelled attributes of each element, in the order they are written. An
// extra attribute may not reuse one of these names: it would read back as
// the modelled attribute.
const SAY: &[&str] = &["voice", "language", "loop"];
const PLAY: &[&str] = &["loop", "digits"];
const PAUSE: &[&str] = &["length"];
const GATHER: &[&str] =
    &["input", "action", "method", "timeout", "numDigits", "finishOnKey", "speechTimeout"];
const DIAL: &[&str] = &["action", "method", "timeout", "callerId", "record", "timeLimit", "answerOnBridge"];
const NUMBER: &[&str] =
    &["sendDigits", "url", "method", "statusCallbackEvent", "statusCallback", "statusCallbackMethod"];
const STREAM: &[&str] = &["url", "name", "track", "statusCallback", "statusCallbackMethod"];
const PARAMETER: &[&str] = &["name", "value"];
const MEDIA_VERB: &[&str] = &["action", "method"];
const STOP_STREAM: &[&str] = &["name"];
const REDIRECT: &[&str] = &["method"];
const REJECT: &[&str] = &["reason"];
const RECORD: &[&str] = &["action", "method", "timeout", "finishOnKey", "maxLength", "playBeep", "trim"];

impl Response {
    /// Writes the document: the XML declaration, then `<Response>` without
    /// insignificant whitespace. The output depends only on `self`.
    ///
    /// # Errors
    /// [`TwimlError::ForbiddenChar`] if a text or attribute holds a character
    /// XML 1.0 cannot carry; [`TwimlError::InvalidName`] or
    /// [`TwimlError::DuplicateAttribute`] for a bad extra attribute or
    /// unmodelled element; [`TwimlError::TooDeep`],
    /// [`TwimlError::TooManyElements`] or [`TwimlError::TooManyAttributes`]
    /// past the default [`ParseLimits`] (so that what is written reads back).
    pub fn to_xml(&self) -> Result<String, TwimlError> {
        let mut out = String::new();
        self.write_xml(&mut out)?;
        Ok(out)
    }

    /// Like [`Self::to_xml`], appending to a reused `out`. On error `out` is
    /// left as it was.
    ///
    /// # Errors
    /// As [`Self::to_xml`].
    pub fn write_xml(&self, out: &mut String) -> Result<(), TwimlError> {
        let before = out.len();
        let mut w = XmlWriter::new(out);
        w.declaration();
        let written = write_response(&mut w, self);
        if written.is_err() {
            out.truncate(before);
        }
        written
    }

    /// Parses a TwiML document with the default [`ParseLimits`].
    ///
    /// # Errors
    /// Any [`TwimlError`] but [`TwimlError::ForbiddenChar`] and
    /// [`TwimlError::InvalidName`]: the text is not well-formed XML, exceeds
    /// a limit, is not rooted at `<Response>`, nests an element TwiML does
    /// not allow where it is, lacks a required attribute, or gives a
    /// modelled attribute a value TwiML does not define.
    pub fn from_xml(text: &str) -> Result<Self, TwimlError> {
        Response::from_xml_with_limits(text, &ParseLimits::default())
    }

    /// Parses a TwiML document within `limits`.
    ///
    /// # Errors
    /// As [`Self::from_xml`].
    pub fn from_xml_with_limits(text: &str, limits: &ParseLimits) -> Result<Self, TwimlError> {
        read_response(parse_document(text, limits)?)
    }
}

impl FromStr for Response {
    type Err = TwimlError;
    fn from_str(text: &str) -> Result<Self, TwimlError> {
        Response::from_xml(text)
    }
}

// ---------------------------------------------------------------- writing

type Written = Result<(), TwimlError>;

fn opt_str(w: &mut XmlWriter<'_>, element: &str, name: &str, value: Option<&String>) -> Written {
    value.map_or(Ok(()), |v| w.attribute(element, name, v))
}

fn opt_display(
    w: &mut XmlWriter<'_>,
    element: &str,
    name: &str,
    value: Option<impl fmt::Display>,
) -> Written {
    value.map_or(Ok(()), |v| w.attribute_display(element, name, v))
}

/// `statusCallbackEvent`: space-separated.
struct SpaceSeparated<'a>(&'a [CallProgressEvent]);

impl fmt::Display for SpaceSeparated<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, event) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(event.as_str())?;
        }
        Ok(())
    }
}

/// An element whose content is `text` (empty text writes `<name/>`).
fn text_element(
    w: &mut XmlWriter<'_>,
    name: &str,
    text: &str,
    attributes: impl FnOnce(&mut XmlWriter<'_>) -> Written,
) -> Written {
    w.start(name)?;
    attributes(w)?;
    if text.is_empty() {
        w.end_empty();
    } else {
        w.end_start();
        w.text(name, text)?;
        w.close(name);
    }
    Ok(())
}

/// An element that holds nothing: `<name …/>`.
fn empty_element(
    w: &mut XmlWriter<'_>,
    name: &str,
    attributes: impl FnOnce(&mut XmlWriter<'_>) -> Written,
) -> Written {
    w.start(name)?;
    attributes(w)?;
    w.end_empty();
    Ok(())
}

/// An element whose content is elements (none writes `<name/>`).
fn container<T>(
    w: &mut XmlWriter<'_>,
    name: &str,
    children: &[T],
    attributes: impl FnOnce(&mut XmlWriter<'_>) -> Written,
    child: impl Fn(&mut XmlWriter<'_>, &T) -> Written,
) -> Written {
    w.start(name)?;
    attributes(w)?;
    if children.is_empty() {
        w.end_empty();
        return Ok(());
    }
    w.end_start();
    for c in children {
        child(w, c)?;
    }
    w.close(name);
    Ok(())
}

fn write_response(w: &mut XmlWriter<'_>, r: &Response) -> Written {
    container(
        w,
        "Response",
        &r.verbs,
        |w| w.extra_attributes("Response", &[], &r.extra_attributes),
        write_verb,
    )
}

fn write_verb(w: &mut XmlWriter<'_>, verb: &Verb) -> Written {
    match verb {
        Verb::Say(v) => write_say(w, v),
        Verb::Play(v) => write_play(w, v),
        Verb::Pause(v) => write_pause(w, v),
        Verb::Gather(v) => write_gather(w, v),
        Verb::Dial(v) => write_dial(w, v),
        Verb::Connect(v) => {
            write_media_verb(w, "Connect", v.action.as_ref(), v.method, &v.nouns, &v.extra_attributes)
        }
        Verb::Start(v) => {
            write_media_verb(w, "Start", v.action.as_ref(), v.method, &v.nouns, &v.extra_attributes)
        }
        Verb::Stop(v) => write_stop(w, v),
        Verb::Hangup(v) => {
            empty_element(w, "Hangup", |w| w.extra_attributes("Hangup", &[], &v.extra_attributes))
        }
        Verb::Redirect(v) => text_element(w, "Redirect", &v.url, |w| {
            opt_display(w, "Redirect", "method", v.method)?;
            w.extra_attributes("Redirect", REDIRECT, &v.extra_attributes)
        }),
        Verb::Reject(v) => empty_element(w, "Reject", |w| {
            opt_display(w, "Reject", "reason", v.reason)?;
            w.extra_attributes("Reject", REJECT, &v.extra_attributes)
        }),
        Verb::Record(v) => write_record(w, v),
        Verb::Other(e) => w.element(e),
    }
}

fn write_say(w: &mut XmlWriter<'_>, s: &Say) -> Written {
    w.mixed("Say", &s.content, |w| {
        opt_str(w, "Say", "voice", s.voice.as_ref())?;
        opt_str(w, "Say", "language", s.language.as_ref())?;
        opt_display(w, "Say", "loop", s.loop_count)?;
        w.extra_attributes("Say", SAY, &s.extra_attributes)
    })
}

fn write_play(w: &mut XmlWriter<'_>, p: &Play) -> Written {
    text_element(w, "Play", &p.url, |w| {
        opt_display(w, "Play", "loop", p.loop_count)?;
        opt_str(w, "Play", "digits", p.digits.as_ref())?;
        w.extra_attributes("Play", PLAY, &p.extra_attributes)
    })
}

fn write_pause(w: &mut XmlWriter<'_>, p: &Pause) -> Written {
    empty_element(w, "Pause", |w| {
        opt_display(w, "Pause", "length", p.length)?;
        w.extra_attributes("Pause", PAUSE, &p.extra_attributes)
    })
}

fn write_gather(w: &mut XmlWriter<'_>, g: &Gather) -> Written {
    const G: &str = "Gather";
    container(
        w,
        G,
        &g.prompts,
        |w| {
            opt_display(w, G, "input", g.input)?;
            opt_str(w, G, "action", g.action.as_ref())?;
            opt_display(w, G, "method", g.method)?;
            opt_display(w, G, "timeout", g.timeout)?;
            opt_display(w, G, "numDigits", g.num_digits)?;
            opt_str(w, G, "finishOnKey", g.finish_on_key.as_ref())?;
            opt_display(w, G, "speechTimeout", g.speech_timeout)?;
            w.extra_attributes(G, GATHER, &g.extra_attributes)
        },
        |w, prompt| match prompt {
            GatherPrompt::Say(s) => write_say(w, s),
            GatherPrompt::Play(p) => write_play(w, p),
            GatherPrompt::Pause(p) => write_pause(w, p),
        },
    )
}

fn write_dial(w: &mut XmlWriter<'_>, d: &Dial) -> Written {
    const D: &str = "Dial";
    let attributes = |w: &mut XmlWriter<'_>| {
        opt_str(w, D, "action", d.action.as_ref())?;
        opt_display(w, D, "method", d.method)?;
        opt_display(w, D, "timeout", d.timeout)?;
        opt_str(w, D, "callerId", d.caller_id.as_ref())?;
        opt_display(w, D, "record", d.record)?;
        opt_display(w, D, "timeLimit", d.time_limit)?;
        opt_display(w, D, "answerOnBridge", d.answer_on_bridge)?;
        w.extra_attributes(D, DIAL, &d.extra_attributes)
    };
    match &d.target {
        DialTarget::Number(number) => text_element(w, D, number, attributes),
        DialTarget::Nouns(nouns) => container(w, D, nouns, attributes, |w, noun| match noun {
            DialNoun::Number(n) => write_number(w, n),
            DialNoun::Other(e) => w.element(e),
        }),
    }
}

fn write_number(w: &mut XmlWriter<'_>, n: &Number) -> Written {
    const N: &str = "Number";
    text_element(w, N, &n.number, |w| {
        opt_str(w, N, "sendDigits", n.send_digits.as_ref())?;
        opt_str(w, N, "url", n.url.as_ref())?;
        opt_display(w, N, "method", n.method)?;
        if !n.status_callback_event.is_empty() {
            w.attribute_display(N, "statusCallbackEvent", SpaceSeparated(&n.status_callback_event))?;
        }
        opt_str(w, N, "statusCallback", n.status_callback.as_ref())?;
        opt_display(w, N, "statusCallbackMethod", n.status_callback_method)?;
        w.extra_attributes(N, NUMBER, &n.extra_attributes)
    })
}

fn write_media_verb(
    w: &mut XmlWriter<'_>,
    name: &str,
    action: Option<&String>,
    method: Option<HttpMethod>,
    nouns: &[MediaNoun],
    extra: &[Attribute],
) -> Written {
    container(
        w,
        name,
        nouns,
        |w| {
            opt_str(w, name, "action", action)?;
            opt_display(w, name, "method", method)?;
            w.extra_attributes(name, MEDIA_VERB, extra)
        },
        |w, noun| match noun {
            MediaNoun::Stream(s) => write_stream(w, s),
            MediaNoun::Other(e) => w.element(e),
        },
    )
}

fn write_stream(w: &mut XmlWriter<'_>, s: &Stream) -> Written {
    const S: &str = "Stream";
    container(
        w,
        S,
        &s.parameters,
        |w| {
            w.attribute(S, "url", s.url.as_str())?;
            opt_str(w, S, "name", s.name.as_ref())?;
            opt_display(w, S, "track", s.track)?;
            opt_str(w, S, "statusCallback", s.status_callback.as_ref())?;
            opt_display(w, S, "statusCallbackMethod", s.status_callback_method)?;
            w.extra_attributes(S, STREAM, &s.extra_attributes)
        },
        |w, p| {
            empty_element(w, "Parameter", |w| {
                w.attribute("Parameter", "name", &p.name)?;
                w.attribute("Parameter", "value", &p.value)?;
                w.extra_attributes("Parameter", PARAMETER, &p.extra_attributes)
            })
        },
    )
}

fn write_stop(w: &mut XmlWriter<'_>, s: &Stop) -> Written {
    container(
        w,
        "Stop",
        &s.nouns,
        |w| w.extra_attributes("Stop", &[], &s.extra_attributes),
        |w, noun| match noun {
            StopNoun::Stream(s) => empty_element(w, "Stream", |w| {
                w.attribute("Stream", "name", &s.name)?;
                w.extra_attributes("Stream", STOP_STREAM, &s.extra_attributes)
            }),
            StopNoun::Other(e) => w.element(e),
        },
    )
}

fn write_record(w: &mut XmlWriter<'_>, r: &Record) -> Written {
    const R: &str = "Record";
    empty_element(w, R, |w| {
        opt_str(w, R, "action", r.action.as_ref())?;
        opt_display(w, R, "method", r.method)?;
        opt_display(w, R, "timeout", r.timeout)?;
        opt_str(w, R, "finishOnKey", r.finish_on_key.as_ref())?;
        opt_display(w, R, "maxLength", r.max_length)?;
        opt_display(w, R, "playBeep", r.play_beep)?;
        opt_display(w, R, "trim", r.trim)?;
        w.extra_attributes(R, RECORD, &r.extra_attributes)
    })
}

// ---------------------------------------------------------------- reading

type Read<T> = Result<T, TwimlError>;

/// The attributes of one element, taken out one by one as they are read;
/// what is left over becomes `extra_attributes`.
struct Attrs {
    element: &'static str,
    list: Vec<Attribute>,
}

impl Attrs {
    fn new(element: &'static str, list: Vec<Attribute>) -> Self {
        Attrs { element, list }
    }

    fn string(&mut self, name: &str) -> Option<String> {
        let i = self.list.iter().position(|a| a.name == name)?;
        Some(self.list.remove(i).value)
    }

    fn required(&mut self, name: &'static str) -> Read<String> {
        self.string(name)
            .ok_or(TwimlError::MissingAttribute { element: self.element.to_owned(), attribute: name })
    }

    fn typed<T>(
        &mut self,
        name: &'static str,
        expected: &'static str,
        read: impl FnOnce(&str) -> Option<T>,
    ) -> Read<Option<T>> {
        let Some(text) = self.string(name) else { return Ok(None) };
        match read(&text) {
            Some(value) => Ok(Some(value)),
            None => Err(TwimlError::InvalidAttribute {
                element: self.element.to_owned(),
                attribute: name,
                value: excerpt(&text),
                expected,
            }),
        }
    }

    fn count(&mut self, name: &'static str) -> Read<Option<u32>> {
        self.typed(name, "a whole number from 0 to 4294967295", read_u32)
    }

    fn boolean(&mut self, name: &'static str) -> Read<Option<bool>> {
        self.typed(name, "true or false", |t| match t {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        })
    }

    fn method(&mut self, name: &'static str) -> Read<Option<HttpMethod>> {
        self.typed(name, "GET or POST", HttpMethod::from_keyword)
    }

    fn rest(self) -> Vec<Attribute> {
        self.list
    }
}

/// Digits only: TwiML numbers carry no sign, no spaces, no exponent.
fn read_u32(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The element children of `parent`, skipping whitespace between them.
fn child_elements(parent: &str, children: Vec<Node>) -> Read<Vec<Element>> {
    let mut elements = Vec::with_capacity(children.len());
    for child in children {
        match child {
            Node::Element(e) => elements.push(e),
            Node::Text(t) if is_blank(&t) => {}
            Node::Text(_) => return Err(TwimlError::UnexpectedText { element: parent.to_owned() }),
        }
    }
    Ok(elements)
}

/// The text of an element that may hold only text, kept exactly.
fn text_only(parent: &str, children: Vec<Node>) -> Read<String> {
    let mut text = String::new();
    for child in children {
        match child {
            Node::Text(t) => text.push_str(&t),
            Node::Element(e) => return Err(unexpected(parent, &e)),
        }
    }
    Ok(text)
}

/// Checks that an element that holds nothing holds nothing but whitespace.
fn nothing(parent: &str, children: Vec<Node>) -> Read<()> {
    match child_elements(parent, children)?.first() {
        Some(e) => Err(unexpected(parent, e)),
        None => Ok(()),
    }
}

fn unexpected(parent: &str, element: &Element) -> TwimlError {
    TwimlError::UnexpectedElement { parent: parent.to_owned(), element: excerpt(&element.name) }
}

fn read_response(root: Element) -> Read<Response> {
    if root.name != "Response" {
        return Err(TwimlError::NotResponse { found: excerpt(&root.name) });
    }
    let verbs =
        child_elements("Response", root.children)?.into_iter().map(read_verb).collect::<Read<Vec<Verb>>>()?;
    Ok(Response { verbs, extra_attributes: root.attributes })
}

fn read_verb(e: Element) -> Read<Verb> {
    Ok(match e.name.as_str() {
        "Say" => Verb::Say(read_say(e)?),
        "Play" => Verb::Play(read_play(e)?),
        "Pause" => Verb::Pause(read_pause(e)?),
        "Gather" => Verb::Gather(read_gather(e)?),
        "Dial" => Verb::Dial(read_dial(e)?),
        "Connect" => {
            let (action, method, nouns, extra_attributes) = read_media_verb("Connect", e)?;
            Verb::Connect(Connect { action, method, nouns, extra_attributes })
        }
        "Start" => {
            let (action, method, nouns, extra_attributes) = read_media_verb("Start", e)?;
            Verb::Start(Start { action, method, nouns, extra_attributes })
        }
        "Stop" => Verb::Stop(read_stop(e)?),
        "Hangup" => {
            nothing("Hangup", e.children)?;
            Verb::Hangup(Hangup { extra_attributes: e.attributes })
        }
        "Redirect" => {
            let mut a = Attrs::new("Redirect", e.attributes);
            let method = a.method("method")?;
            let url = text_only("Redirect", e.children)?;
            Verb::Redirect(Redirect { url, method, extra_attributes: a.rest() })
        }
        "Reject" => {
            let mut a = Attrs::new("Reject", e.attributes);
            let reason = a.typed("reason", "rejected or busy", RejectReason::from_keyword)?;
            nothing("Reject", e.children)?;
            Verb::Reject(Reject { reason, extra_attributes: a.rest() })
        }
        "Record" => Verb::Record(read_record(e)?),
        _ => Verb::Other(e),
    })
}

fn read_say(e: Element) -> Read<Say> {
    let mut a = Attrs::new("Say", e.attributes);
    Ok(Say {
        voice: a.string("voice"),
        language: a.string("language"),
        loop_count: a.count("loop")?,
        content: e.children,
        extra_attributes: a.rest(),
    })
}

fn read_play(e: Element) -> Read<Play> {
    let mut a = Attrs::new("Play", e.attributes);
    Ok(Play {
        loop_count: a.count("loop")?,
        digits: a.string("digits"),
        url: text_only("Play", e.children)?,
        extra_attributes: a.rest(),
    })
}

fn read_pause(e: Element) -> Read<Pause> {
    let mut a = Attrs::new("Pause", e.attributes);
    let length = a.count("length")?;
    nothing("Pause", e.children)?;
    Ok(Pause { length, extra_attributes: a.rest() })
}

fn read_gather(e: Element) -> Read<Gather> {
    let mut a = Attrs::new("Gather", e.attributes);
    let input = a.typed("input", "dtmf, speech or \"dtmf speech\"", GatherInput::from_list)?;
    let action = a.string("action");
    let method = a.method("method")?;
    let timeout = a.count("timeout")?;
    let num_digits = a.count("numDigits")?;
    let finish_on_key = a.string("finishOnKey");
    let speech_timeout = a.typed("speechTimeout", "auto or a whole number of seconds", |t| {
        if t == "auto" { Some(SpeechTimeout::Auto) } else { read_u32(t).map(SpeechTimeout::Seconds) }
    })?;
    let prompts = child_elements("Gather", e.children)?
        .into_iter()
        .map(|child| match child.name.as_str() {
            "Say" => read_say(child).map(GatherPrompt::Say),
            "Play" => read_play(child).map(GatherPrompt::Play),
            "Pause" => read_pause(child).map(GatherPrompt::Pause),
            _ => Err(unexpected("Gather", &child)),
        })
        .collect::<Read<Vec<_>>>()?;
    Ok(Gather {
        input,
        action,
        method,
        timeout,
        num_digits,
        finish_on_key,
        speech_timeout,
        prompts,
        extra_attributes: a.rest(),
    })
}

fn read_dial(e: Element) -> Read<Dial> {
    let mut a = Attrs::new("Dial", e.attributes);
    let action = a.string("action");
    let method = a.method("method")?;
    let timeout = a.count("timeout")?;
    let caller_id = a.string("callerId");
    let record = a.typed(
        "record",
        "do-not-record, record-from-answer, record-from-ringing, record-from-answer-dual, \
         record-from-ringing-dual, true or false",
        DialRecord::from_value,
    )?;
    let time_limit = a.count("timeLimit")?;
    let answer_on_bridge = a.boolean("answerOnBridge")?;
    let has_nouns = e.children.iter().any(|c| matches!(c, Node::Element(_)));
    let target = if has_nouns {
        let nouns = child_elements("Dial", e.children)?
            .into_iter()
            .map(|child| match child.name.as_str() {
                "Number" => read_number(child).map(DialNoun::Number),
                _ => Ok(DialNoun::Other(child)),
            })
            .collect::<Read<Vec<_>>>()?;
        DialTarget::Nouns(nouns)
    } else {
        DialTarget::Number(text_only("Dial", e.children)?)
    };
    Ok(Dial {
        action,
        method,
        timeout,
        caller_id,
        record,
        time_limit,
        answer_on_bridge,
        target,
        extra_attributes: a.rest(),
    })
}

fn read_number(e: Element) -> Read<Number> {
    let mut a = Attrs::new("Number", e.attributes);
    let send_digits = a.string("sendDigits");
    let url = a.string("url");
    let method = a.method("method")?;
    let status_callback_event = a
        .typed(
            "statusCallbackEvent",
            "a space-separated list of initiated, ringing, answered, completed",
            |t| t.split_ascii_whitespace().map(CallProgressEvent::from_keyword).collect::<Option<Vec<_>>>(),
        )?
        .unwrap_or_default();
    let status_callback = a.string("statusCallback");
    let status_callback_method = a.method("statusCallbackMethod")?;
    Ok(Number {
        number: text_only("Number", e.children)?,
        send_digits,
        url,
        method,
        status_callback_event,
        status_callback,
        status_callback_method,
        extra_attributes: a.rest(),
    })
}

type MediaVerbParts = (Option<String>, Option<HttpMethod>, Vec<MediaNoun>, Vec<Attribute>);

fn read_media_verb(name: &'static str, e: Element) -> Read<MediaVerbParts> {
    let mut a = Attrs::new(name, e.attributes);
    let action = a.string("action");
    let method = a.method("method")?;
    let nouns = child_elements(name, e.children)?
        .into_iter()
        .map(|child| match child.name.as_str() {
            "Stream" => read_stream(child).map(MediaNoun::Stream),
            _ => Ok(MediaNoun::Other(child)),
        })
        .collect::<Read<Vec<_>>>()?;
    Ok((action, method, nouns, a.rest()))
}

fn read_stream(e: Element) -> Read<Stream> {
    let mut a = Attrs::new("Stream", e.attributes);
    let url = StreamUrl::new(a.required("url")?)?;
    let name = a.string("name");
    let track =
        a.typed("track", "inbound_track, outbound_track or both_tracks", StreamTrack::from_keyword)?;
    let status_callback = a.string("statusCallback");
    let status_callback_method = a.method("statusCallbackMethod")?;
    let parameters = child_elements("Stream", e.children)?
        .into_iter()
        .map(|child| {
            if child.name != "Parameter" {
                return Err(unexpected("Stream", &child));
            }
            let mut a = Attrs::new("Parameter", child.attributes);
            let name = a.required("name")?;
            let value = a.required("value")?;
            nothing("Parameter", child.children)?;
            Ok(Parameter { name, value, extra_attributes: a.rest() })
        })
        .collect::<Read<Vec<_>>>()?;
    Ok(Stream {
        url,
        name,
        track,
        status_callback,
        status_callback_method,
        parameters,
        extra_attributes: a.rest(),
    })
}

fn read_stop(e: Element) -> Read<Stop> {
    let nouns = child_elements("Stop", e.children)?
        .into_iter()
        .map(|child| {
            if child.name != "Stream" {
                return Ok(StopNoun::Other(child));
            }
            let mut a = Attrs::new("Stream", child.attributes);
            let name = a.required("name")?;
            nothing("Stream", child.children)?;
            Ok(StopNoun::Stream(StopStream { name, extra_attributes: a.rest() }))
        })
        .collect::<Read<Vec<_>>>()?;
    Ok(Stop { nouns, extra_attributes: e.attributes })
}

fn read_record(e: Element) -> Read<Record> {
    let mut a = Attrs::new("Record", e.attributes);
    let record = Record {
        action: a.string("action"),
        method: a.method("method")?,
        timeout: a.count("timeout")?,
        finish_on_key: a.string("finishOnKey"),
        max_length: a.count("maxLength")?,
        play_beep: a.boolean("playBeep")?,
        trim: a.typed("trim", "trim-silence or do-not-trim", RecordTrim::from_keyword)?,
        extra_attributes: Vec::new(),
    };
    nothing("Record", e.children)?;
    Ok(Record { extra_attributes: a.rest(), ..record })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::twiml::remove_forbidden_chars;

    const DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

    fn doc(body: &str) -> String {
        format!("{DECL}{body}")
    }

    /// Parses `pretty` (a document in the shape Twilio's docs print), checks
    /// it equals `expected`, and that `expected` writes exactly `compact`.
    fn golden(pretty: &str, expected: &Response, compact: &str) {
        assert_eq!(Response::from_xml(pretty).as_ref(), Ok(expected), "parsing {pretty}");
        assert_eq!(expected.to_xml().as_deref(), Ok(doc(compact).as_str()));
        assert_eq!(Response::from_xml(&doc(compact)).as_ref(), Ok(expected), "reading back {compact}");
    }

    #[test]
    fn golden_connect_stream_with_parameters() {
        let pretty = r#"<?xml version="1.0" encoding="UTF-8"?>
<Response>
    <Connect>
        <Stream url="wss://mystream.ngrok.io/audiostream">
            <Parameter name="FirstName" value="Jane" />
            <Parameter name="LastName" value="Doe" />
        </Stream>
    </Connect>
</Response>
"#;
        let expected = Response::new().connect_stream(
            Stream::new("wss://mystream.ngrok.io/audiostream")
                .unwrap()
                .parameter("FirstName", "Jane")
                .parameter("LastName", "Doe"),
        );
        golden(
            pretty,
            &expected,
            r#"<Response><Connect><Stream url="wss://mystream.ngrok.io/audiostream"><Parameter name="FirstName" value="Jane"/><Parameter name="LastName" value="Doe"/></Stream></Connect></Response>"#,
        );
    }

    #[test]
    fn golden_start_stream_then_say_and_stop() {
        let pretty = r#"<?xml version="1.0" encoding="UTF-8"?>
<Response>
  <Start>
    <Stream name="Example Audio Stream" url="wss://example.com/audiostream" track="both_tracks" statusCallback="https://example.com/stream-status" statusCallbackMethod="GET" />
  </Start>
  <Say>The stream has started.</Say>
  <Stop>
    <Stream name="Example Audio Stream" />
  </Stop>
</Response>"#;
        let expected = Response::new()
            .start_stream(
                Stream::new("wss://example.com/audiostream")
                    .unwrap()
                    .name("Example Audio Stream")
                    .track(StreamTrack::BothTracks)
                    .status_callback("https://example.com/stream-status")
                    .status_callback_method(HttpMethod::Get),
            )
            .say("The stream has started.")
            .stop_stream("Example Audio Stream");
        golden(
            pretty,
            &expected,
            r#"<Response><Start><Stream url="wss://example.com/audiostream" name="Example Audio Stream" track="both_tracks" statusCallback="https://example.com/stream-status" statusCallbackMethod="GET"/></Start><Say>The stream has started.</Say><Stop><Stream name="Example Audio Stream"/></Stop></Response>"#,
        );
    }

    #[test]
    fn golden_gather_with_nested_say() {
        let pretty = r#"<?xml version="1.0" encoding="UTF-8"?>
<Response>
    <Gather input="speech dtmf" timeout="3" numDigits="1">
        <Say>Please press 1 or say sales for sales.</Say>
    </Gather>
</Response>"#;
        let expected = Response::new().gather(
            Gather::new()
                .input(GatherInput::DtmfSpeech)
                .timeout(3)
                .num_digits(1)
                .say("Please press 1 or say sales for sales."),
        );
        golden(
            pretty,
            &expected,
            r#"<Response><Gather input="dtmf speech" timeout="3" numDigits="1"><Say>Please press 1 or say sales for sales.</Say></Gather></Response>"#,
        );
    }

    #[test]
    fn golden_gather_with_every_attribute_and_prompt() {
        let pretty = r#"<Response>
  <Gather action="/process_gather.php" method="GET" input="speech" finishOnKey="*" speechTimeout="auto" timeout="10" numDigits="4">
    <Say voice="Polly.Amy" language="en-GB" loop="2">Enter something</Say>
    <Pause length="2"/>
    <Play loop="1">https://api.twilio.com/cowbell.mp3</Play>
  </Gather>
  <Say>We didn't receive any input. Goodbye!</Say>
</Response>"#;
        let expected = Response::new()
            .gather(
                Gather::new()
                    .action("/process_gather.php")
                    .method(HttpMethod::Get)
                    .input(GatherInput::Speech)
                    .finish_on_key("*")
                    .speech_timeout(SpeechTimeout::Auto)
                    .timeout(10)
                    .num_digits(4)
                    .say(Say::new("Enter something").voice("Polly.Amy").language("en-GB").loop_count(2))
                    .pause(Pause::seconds(2))
                    .play(Play::new("https://api.twilio.com/cowbell.mp3").loop_count(1)),
            )
            .say("We didn't receive any input. Goodbye!");
        golden(
            pretty,
            &expected,
            r#"<Response><Gather input="speech" action="/process_gather.php" method="GET" timeout="10" numDigits="4" finishOnKey="*" speechTimeout="auto"><Say voice="Polly.Amy" language="en-GB" loop="2">Enter something</Say><Pause length="2"/><Play loop="1">https://api.twilio.com/cowbell.mp3</Play></Gather><Say>We didn&apos;t receive any input. Goodbye!</Say></Response>"#
                .replace("&apos;", "'")
                .as_str(),
        );
    }

    #[test]
    fn golden_dial_with_numbers() {
        let pretty = r#"<?xml version="1.0" encoding="UTF-8"?>
<Response>
    <Dial callerId="+15551112222" timeout="20" timeLimit="600" record="record-from-answer-dual" answerOnBridge="true" action="/dial-done" method="POST">
        <Number>858-987-6543</Number>
        <Number sendDigits="wwww1928">415-123-4567</Number>
        <Number statusCallbackEvent="initiated ringing answered completed" statusCallback="https://myapp.com/calls/events" statusCallbackMethod="POST" url="/screen" method="GET">+12349013030</Number>
    </Dial>
</Response>"#;
        let expected = Response::new().dial(
            Dial::default()
                .caller_id("+15551112222")
                .timeout(20)
                .time_limit(600)
                .record(DialRecord::RecordFromAnswerDual)
                .answer_on_bridge(true)
                .action("/dial-done")
                .method(HttpMethod::Post)
                .add_number("858-987-6543")
                .add_number(Number::new("415-123-4567").send_digits("wwww1928"))
                .add_number(
                    Number::new("+12349013030")
                        .status_callback_event(CallProgressEvent::Initiated)
                        .status_callback_event(CallProgressEvent::Ringing)
                        .status_callback_event(CallProgressEvent::Answered)
                        .status_callback_event(CallProgressEvent::Completed)
                        .status_callback("https://myapp.com/calls/events")
                        .status_callback_method(HttpMethod::Post)
                        .url("/screen")
                        .method(HttpMethod::Get),
                ),
        );
        golden(
            pretty,
            &expected,
            r#"<Response><Dial action="/dial-done" method="POST" timeout="20" callerId="+15551112222" record="record-from-answer-dual" timeLimit="600" answerOnBridge="true"><Number>858-987-6543</Number><Number sendDigits="wwww1928">415-123-4567</Number><Number url="/screen" method="GET" statusCallbackEvent="initiated ringing answered completed" statusCallback="https://myapp.com/calls/events" statusCallbackMethod="POST">+12349013030</Number></Dial></Response>"#,
        );
    }

    #[test]
    fn golden_dial_plain_number_then_say() {
        let pretty = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response>\n    <Dial>415-123-4567</Dial>\n    <Say>Goodbye</Say>\n</Response>\n";
        let expected = Response::new().dial("415-123-4567").say("Goodbye");
        golden(pretty, &expected, "<Response><Dial>415-123-4567</Dial><Say>Goodbye</Say></Response>");
    }

    #[test]
    fn golden_record_reject_redirect_hangup_play_digits() {
        let pretty = r#"<?xml version="1.0" encoding="UTF-8"?>
<Response>
    <Say>Please leave a message at the beep. Press the star key when finished.</Say>
    <Record action="http://foo.edu/handleRecording.php" method="GET" maxLength="20" finishOnKey="*" timeout="5" playBeep="false" trim="do-not-trim"/>
    <Play digits="wwww3"></Play>
    <Redirect method="POST">http://pigeons.com/twiml.xml</Redirect>
    <Reject reason="busy" />
    <Hangup/>
</Response>"#;
        let expected = Response::new()
            .say("Please leave a message at the beep. Press the star key when finished.")
            .record(
                Record::new()
                    .action("http://foo.edu/handleRecording.php")
                    .method(HttpMethod::Get)
                    .max_length(20)
                    .finish_on_key("*")
                    .timeout(5)
                    .play_beep(false)
                    .trim(RecordTrim::DoNotTrim),
            )
            .play(Play::dtmf("wwww3"))
            .redirect(Redirect::new("http://pigeons.com/twiml.xml").method(HttpMethod::Post))
            .reject(Reject::new().reason(RejectReason::Busy))
            .hangup();
        golden(
            pretty,
            &expected,
            r#"<Response><Say>Please leave a message at the beep. Press the star key when finished.</Say><Record action="http://foo.edu/handleRecording.php" method="GET" timeout="5" finishOnKey="*" maxLength="20" playBeep="false" trim="do-not-trim"/><Play digits="wwww3"/><Redirect method="POST">http://pigeons.com/twiml.xml</Redirect><Reject reason="busy"/><Hangup/></Response>"#,
        );
    }

    #[test]
    fn golden_empty_response() {
        golden("<Response/>", &Response::new(), "<Response/>");
        golden("<?xml version='1.0'?>\n<Response>\n</Response>\n", &Response::new(), "<Response/>");
    }

    #[test]
    fn escapes_special_characters_in_text_and_attributes() {
        let r = Response::new()
            .say(Say::new(r#"Tom & Jerry <3 "quotes" 'apos'"#).voice("a'b\"c"))
            .connect_stream(
                Stream::new("wss://h.example/media/a&b").unwrap().parameter("q&a", "x<y>'z'\"w\""),
            );
        let xml = r.to_xml().unwrap();
        assert_eq!(
            xml,
            doc(
                r#"<Response><Say voice="a&apos;b&quot;c">Tom &amp; Jerry &lt;3 &quot;quotes&quot; 'apos'</Say><Connect><Stream url="wss://h.example/media/a&amp;b"><Parameter name="q&amp;a" value="x&lt;y&gt;&apos;z&apos;&quot;w&quot;"/></Stream></Connect></Response>"#
            )
        );
        assert_eq!(Response::from_xml(&xml), Ok(r));
    }

    #[test]
    fn keeps_ssml_unknown_verbs_nouns_and_attributes() {
        let text = r#"<Response>
  <Say voice="Polly.Joanna">Hi <break time="1s"/><prosody rate="slow">there</prosody>.</Say>
  <Gather language="en-US" hints="sales, support" input="dtmf"/>
  <Enqueue waitUrl="/wait">support</Enqueue>
  <Dial><Client>alice</Client><Number>+15550001111</Number></Dial>
  <Connect action="/after"><Room participantIdentity="bob">DailyStandup</Room></Connect>
  <say>lower case is another element</say>
</Response>"#;
        let expected = Response::new()
            .say(
                Say::new("Hi ")
                    .voice("Polly.Joanna")
                    .ssml(Element::new("break").attribute("time", "1s"))
                    .ssml(Element::new("prosody").attribute("rate", "slow").text("there"))
                    .text_after("."),
            )
            .gather(
                Gather::new()
                    .attribute("language", "en-US")
                    .attribute("hints", "sales, support")
                    .input(GatherInput::Dtmf),
            )
            .verb(Verb::Other(Element::new("Enqueue").attribute("waitUrl", "/wait").text("support")))
            .dial(
                Dial::nouns([DialNoun::Other(Element::new("Client").text("alice"))])
                    .add_number("+15550001111"),
            )
            .connect(
                Connect::new()
                    .action("/after")
                    .other(Element::new("Room").attribute("participantIdentity", "bob").text("DailyStandup")),
            )
            .verb(Verb::Other(Element::new("say").text("lower case is another element")));
        let parsed = Response::from_xml(text).unwrap();
        assert_eq!(parsed, expected);
        assert_eq!(Response::from_xml(&parsed.to_xml().unwrap()), Ok(parsed));
    }

    impl Say {
        /// Test helper: appends text after SSML.
        fn text_after(mut self, text: &str) -> Self {
            crate::twiml::xml::push_text_node(&mut self.content, text.to_owned());
            self
        }
    }

    #[test]
    fn reports_twiml_errors_with_the_culprit() {
        let err = |text: &str| Response::from_xml(text).expect_err(text);
        assert_eq!(err("<Respons/>"), TwimlError::NotResponse { found: "Respons".into() });
        assert_eq!(
            err("<Response><Gather><Dial>1</Dial></Gather></Response>"),
            TwimlError::UnexpectedElement { parent: "Gather".into(), element: "Dial".into() }
        );
        assert_eq!(
            err("<Response><Play>a<b/></Play></Response>"),
            TwimlError::UnexpectedElement { parent: "Play".into(), element: "b".into() }
        );
        assert_eq!(
            err("<Response><Connect><Stream url='wss://h/m'><Say>x</Say></Stream></Connect></Response>"),
            TwimlError::UnexpectedElement { parent: "Stream".into(), element: "Say".into() }
        );
        assert_eq!(
            err("<Response>hello</Response>"),
            TwimlError::UnexpectedText { element: "Response".into() }
        );
        assert_eq!(
            err("<Response><Dial>x<Number>1</Number></Dial></Response>"),
            TwimlError::UnexpectedText { element: "Dial".into() }
        );
        assert_eq!(
            err("<Response><Pause length='-1'/></Response>"),
            TwimlError::InvalidAttribute {
                element: "Pause".into(),
                attribute: "length",
                value: "-1".into(),
                expected: "a whole number from 0 to 4294967295",
            }
        );
        assert!(matches!(
            err("<Response><Pause length='4294967296'/></Response>"),
            TwimlError::InvalidAttribute { attribute: "length", .. }
        ));
        assert!(matches!(
            err("<Response><Connect><Stream url='wss://h/m' track='inbound'/></Connect></Response>"),
            TwimlError::InvalidAttribute { attribute: "track", .. }
        ));
        assert!(matches!(
            err("<Response><Record playBeep='yes'/></Response>"),
            TwimlError::InvalidAttribute { attribute: "playBeep", .. }
        ));
        assert!(matches!(
            err("<Response><Redirect method='get'>/x</Redirect></Response>"),
            TwimlError::InvalidAttribute { attribute: "method", .. }
        ));
        assert!(matches!(
            err(
                "<Response><Dial><Number statusCallbackEvent='initiated hungup'>1</Number></Dial></Response>"
            ),
            TwimlError::InvalidAttribute { attribute: "statusCallbackEvent", .. }
        ));
        assert_eq!(
            err("<Response><Connect><Stream/></Connect></Response>"),
            TwimlError::MissingAttribute { element: "Stream".into(), attribute: "url" }
        );
        assert_eq!(
            err(
                "<Response><Connect><Stream url='wss://h/m'><Parameter name='a'/></Stream></Connect></Response>"
            ),
            TwimlError::MissingAttribute { element: "Parameter".into(), attribute: "value" }
        );
        assert_eq!(
            err("<Response><Stop><Stream/></Stop></Response>"),
            TwimlError::MissingAttribute { element: "Stream".into(), attribute: "name" }
        );
        assert_eq!(
            err("<Response><Connect><Stream url='wss://h/m?CallSid=CA1'/></Connect></Response>"),
            TwimlError::InvalidStreamUrl {
                url: "wss://h/m?CallSid=CA1".into(),
                reason: "Twilio drops query strings: pass values as <Parameter>s",
            }
        );
    }

    #[test]
    fn writing_refuses_forbidden_characters_and_shadowing_extras() {
        assert_eq!(
            Response::new().say("bell\u{7}").to_xml(),
            Err(TwimlError::ForbiddenChar { element: "Say".into(), attribute: None, ch: '\u{7}' })
        );
        let stream = Stream::new("wss://h/m").unwrap().parameter("CallerName", "Jane\u{0}");
        assert_eq!(
            Response::new().connect_stream(stream).to_xml(),
            Err(TwimlError::ForbiddenChar {
                element: "Parameter".into(),
                attribute: Some("value".into()),
                ch: '\u{0}'
            })
        );
        assert_eq!(
            Response::new().say(Say::new("x").attribute("voice", "man")).to_xml(),
            Err(TwimlError::DuplicateAttribute { element: "Say".into(), attribute: "voice".into() })
        );
        assert_eq!(
            Response::new().say(Say::new("x").attribute("bad name", "v")).to_xml(),
            Err(TwimlError::InvalidName { name: "bad name".into() })
        );
        let mut out = String::from("kept");
        assert!(Response::new().say("\u{1}").write_xml(&mut out).is_err());
        assert_eq!(out, "kept", "a failed write leaves the buffer as it was");
        let clean = remove_forbidden_chars("Jane\u{0}\u{1b}Doe\u{FFFF}");
        assert_eq!(
            Response::new().say(clean.as_ref()).to_xml(),
            Ok(doc("<Response><Say>JaneDoe</Say></Response>"))
        );
    }

    #[test]
    fn accepts_twilio_legacy_and_liberal_spellings() {
        let r = Response::from_xml(
            "\u{FEFF}<?xml version=\"1.0\"?><!-- hi --><Response><Dial record=\"true\">1</Dial><Gather input=\"dtmf  speech\"/></Response>",
        )
        .unwrap();
        assert_eq!(
            r,
            Response::new()
                .dial(Dial::number("1").record(DialRecord::RecordFromAnswer))
                .gather(Gather::new().input(GatherInput::DtmfSpeech))
        );
    }

    // ------------------------------------------------------------ proptests

    /// Any string XML 1.0 can carry.
    fn xml_string() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[ -~]{0,12}",
            proptest::collection::vec(
                prop::sample::select(vec![
                    "&", "<", ">", "\"", "'", "\r", "\n", "\t", "\r\n", "]]>", " ", "a", "é", "\u{FFFD}",
                    "&amp;", "&#10;"
                ]),
                0..8
            )
            .prop_map(|parts| parts.concat()),
        ]
        .prop_map(|s| remove_forbidden_chars(&s).into_owned())
    }

    /// A string with at least one character XML 1.0 cannot carry.
    fn forbidden_string() -> impl Strategy<Value = String> {
        (
            xml_string(),
            prop::sample::select(vec!['\u{0}', '\u{8}', '\u{B}', '\u{1F}', '\u{FFFE}', '\u{FFFF}']),
            xml_string(),
        )
            .prop_map(|(a, c, b)| format!("{a}{c}{b}"))
    }

    /// A `<Stream>` url with `s`'s URL-safe characters in its path.
    fn stream_url(s: &str) -> StreamUrl {
        let path: String =
            s.chars().filter(|&c| !(c == '?' || c == '#' || c.is_whitespace() || c.is_control())).collect();
        StreamUrl::new(format!("wss://media.example/{path}")).expect("a valid url")
    }

    /// A document with `s` in every text and attribute position.
    fn everywhere(s: &str) -> Response {
        let extra = |name: &str| Attribute::new(name, s);
        let other = Element::new("Enqueue").attribute("waitUrl", s).text(s);
        Response {
            verbs: vec![
                Verb::Say(Say::new(s).voice(s).language(s).attribute("x-say", s)),
                Verb::Play(Play::new(s).digits(s)),
                Verb::Gather(Gather::new().action(s).finish_on_key(s).say(s).play(s)),
                Verb::Dial(Dial::number(s).caller_id(s).action(s)),
                Verb::Dial(Dial::default().add_number(
                    Number::new(s).send_digits(s).url(s).status_callback(s).attribute("byoc", s),
                )),
                Verb::Connect(
                    Connect::new()
                        .action(s)
                        .stream(
                            Stream::from_url(stream_url(s))
                                .name(s)
                                .status_callback(s)
                                .parameter(s, s)
                                .attribute("x-stream", s),
                        )
                        .other(other.clone()),
                ),
                Verb::Start(Start::new().action(s).stream(Stream::from_url(stream_url(s)).name(s))),
                Verb::Stop(Stop::new().stream(s)),
                Verb::Redirect(Redirect::new(s)),
                Verb::Record(Record::new().action(s).finish_on_key(s)),
                Verb::Hangup(Hangup { extra_attributes: vec![extra("x-hangup")] }),
                Verb::Other(other),
            ],
            extra_attributes: vec![extra("x-response")],
        }
    }

    proptest! {
        #[test]
        fn any_string_survives_every_text_and_attribute_position(s in xml_string()) {
            let built = everywhere(&s);
            let xml = built.to_xml().expect("writes");
            prop_assert_eq!(Response::from_xml(&xml), Ok(built));
        }

        #[test]
        fn forbidden_characters_fail_the_write_wherever_they_are(s in forbidden_string()) {
            let built = everywhere(&s);
            let refused = matches!(built.to_xml(), Err(TwimlError::ForbiddenChar { .. }));
            prop_assert!(refused, "writing {:?} must fail", s);
        }
    }

    // Strategies for arbitrary documents.

    fn opt<T: fmt::Debug + Clone>(s: impl Strategy<Value = T>) -> impl Strategy<Value = Option<T>> {
        proptest::option::of(s)
    }

    fn method() -> impl Strategy<Value = HttpMethod> {
        prop::sample::select(HttpMethod::ALL)
    }

    /// Unmodelled attributes: distinct names that no modelled element uses.
    fn extras() -> impl Strategy<Value = Vec<Attribute>> {
        (
            prop::sample::subsequence(vec!["hints", "bargeIn", "x-custom", "data:y", "Ünï"], 0..=3),
            xml_string(),
        )
            .prop_map(|(names, value)| names.into_iter().map(|n| Attribute::new(n, value.clone())).collect())
    }

    /// Names of unmodelled elements: none is a verb or noun this module reads.
    fn other_name() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["Enqueue", "Client", "Room", "Siprec", "break", "amazon:effect", "say-as"])
    }

    /// Content in the form the parser yields: no empty or adjacent text nodes.
    fn normalize(parts: Vec<Node>) -> Vec<Node> {
        let mut nodes = Vec::new();
        for part in parts {
            match part {
                Node::Text(t) => crate::twiml::xml::push_text_node(&mut nodes, t),
                element => nodes.push(element),
            }
        }
        nodes
    }

    fn element() -> impl Strategy<Value = Element> {
        let leaf = (other_name(), extras(), xml_string()).prop_map(|(name, attributes, text)| Element {
            name: name.to_owned(),
            attributes,
            children: normalize(vec![Node::Text(text)]),
        });
        leaf.prop_recursive(3, 12, 4, |inner| {
            (
                other_name(),
                extras(),
                proptest::collection::vec(
                    prop_oneof![xml_string().prop_map(Node::Text), inner.prop_map(Node::Element)],
                    0..4,
                ),
            )
                .prop_map(|(name, attributes, parts)| Element {
                    name: name.to_owned(),
                    attributes,
                    children: normalize(parts),
                })
        })
    }

    fn say() -> impl Strategy<Value = Say> {
        (
            opt(xml_string()),
            opt(xml_string()),
            opt(any::<u32>()),
            proptest::collection::vec(
                prop_oneof![xml_string().prop_map(Node::Text), element().prop_map(Node::Element)],
                0..3,
            ),
            extras(),
        )
            .prop_map(|(voice, language, loop_count, parts, extra_attributes)| Say {
                voice,
                language,
                loop_count,
                content: normalize(parts),
                extra_attributes,
            })
    }

    fn play() -> impl Strategy<Value = Play> {
        (xml_string(), opt(any::<u32>()), opt(xml_string()), extras()).prop_map(
            |(url, loop_count, digits, extra_attributes)| Play { url, loop_count, digits, extra_attributes },
        )
    }

    fn pause() -> impl Strategy<Value = Pause> {
        (opt(any::<u32>()), extras())
            .prop_map(|(length, extra_attributes)| Pause { length, extra_attributes })
    }

    fn gather() -> impl Strategy<Value = Gather> {
        (
            (
                opt(prop::sample::select(GatherInput::ALL)),
                opt(xml_string()),
                opt(method()),
                opt(any::<u32>()),
            ),
            (
                opt(any::<u32>()),
                opt(xml_string()),
                opt(prop_oneof![Just(SpeechTimeout::Auto), any::<u32>().prop_map(SpeechTimeout::Seconds)]),
            ),
            proptest::collection::vec(
                prop_oneof![
                    say().prop_map(GatherPrompt::Say),
                    play().prop_map(GatherPrompt::Play),
                    pause().prop_map(GatherPrompt::Pause)
                ],
                0..3,
            ),
            extras(),
        )
            .prop_map(
                |(
                    (input, action, method, timeout),
                    (num_digits, finish_on_key, speech_timeout),
                    prompts,
                    extra_attributes,
                )| Gather {
                    input,
                    action,
                    method,
                    timeout,
                    num_digits,
                    finish_on_key,
                    speech_timeout,
                    prompts,
                    extra_attributes,
                },
            )
    }

    fn number() -> impl Strategy<Value = Number> {
        (
            xml_string(),
            (opt(xml_string()), opt(xml_string()), opt(method())),
            proptest::collection::vec(prop::sample::select(CallProgressEvent::ALL), 0..5),
            (opt(xml_string()), opt(method())),
            extras(),
        )
            .prop_map(
                |(
                    number,
                    (send_digits, url, method),
                    status_callback_event,
                    (status_callback, status_callback_method),
                    extra_attributes,
                )| Number {
                    number,
                    send_digits,
                    url,
                    method,
                    status_callback_event,
                    status_callback,
                    status_callback_method,
                    extra_attributes,
                },
            )
    }

    fn dial() -> impl Strategy<Value = Dial> {
        let target = prop_oneof![
            xml_string().prop_map(DialTarget::Number),
            proptest::collection::vec(
                prop_oneof![number().prop_map(DialNoun::Number), element().prop_map(DialNoun::Other)],
                1..4
            )
            .prop_map(DialTarget::Nouns),
        ];
        (
            (opt(xml_string()), opt(method()), opt(any::<u32>()), opt(xml_string())),
            (opt(prop::sample::select(DialRecord::ALL)), opt(any::<u32>()), opt(any::<bool>())),
            target,
            extras(),
        )
            .prop_map(
                |(
                    (action, method, timeout, caller_id),
                    (record, time_limit, answer_on_bridge),
                    target,
                    extra_attributes,
                )| Dial {
                    action,
                    method,
                    timeout,
                    caller_id,
                    record,
                    time_limit,
                    answer_on_bridge,
                    target,
                    extra_attributes,
                },
            )
    }

    fn stream() -> impl Strategy<Value = Stream> {
        (
            xml_string(),
            (
                opt(xml_string()),
                opt(prop::sample::select(StreamTrack::ALL)),
                opt(xml_string()),
                opt(method()),
            ),
            proptest::collection::vec((xml_string(), xml_string(), extras()), 0..5),
            extras(),
        )
            .prop_map(
                |(
                    path,
                    (name, track, status_callback, status_callback_method),
                    parameters,
                    extra_attributes,
                )| Stream {
                    url: stream_url(&path),
                    name,
                    track,
                    status_callback,
                    status_callback_method,
                    parameters: parameters
                        .into_iter()
                        .map(|(name, value, extra_attributes)| Parameter { name, value, extra_attributes })
                        .collect(),
                    extra_attributes,
                },
            )
    }

    fn media_nouns() -> impl Strategy<Value = Vec<MediaNoun>> {
        proptest::collection::vec(
            prop_oneof![stream().prop_map(MediaNoun::Stream), element().prop_map(MediaNoun::Other)],
            0..3,
        )
    }

    fn verb() -> impl Strategy<Value = Verb> {
        prop_oneof![
            say().prop_map(Verb::Say),
            play().prop_map(Verb::Play),
            pause().prop_map(Verb::Pause),
            gather().prop_map(Verb::Gather),
            dial().prop_map(Verb::Dial),
            (opt(xml_string()), opt(method()), media_nouns(), extras()).prop_map(
                |(action, method, nouns, extra_attributes)| Verb::Connect(Connect {
                    action,
                    method,
                    nouns,
                    extra_attributes
                })
            ),
            (opt(xml_string()), opt(method()), media_nouns(), extras()).prop_map(
                |(action, method, nouns, extra_attributes)| Verb::Start(Start {
                    action,
                    method,
                    nouns,
                    extra_attributes
                })
            ),
            (
                proptest::collection::vec(
                    prop_oneof![
                        (xml_string(), extras()).prop_map(|(name, extra_attributes)| StopNoun::Stream(
                            StopStream { name, extra_attributes }
                        )),
                        element().prop_map(StopNoun::Other),
                    ],
                    0..3
                ),
                extras()
            )
                .prop_map(|(nouns, extra_attributes)| Verb::Stop(Stop { nouns, extra_attributes })),
            extras().prop_map(|extra_attributes| Verb::Hangup(Hangup { extra_attributes })),
            (xml_string(), opt(method()), extras()).prop_map(|(url, method, extra_attributes)| {
                Verb::Redirect(Redirect { url, method, extra_attributes })
            }),
            (opt(prop::sample::select(RejectReason::ALL)), extras())
                .prop_map(|(reason, extra_attributes)| Verb::Reject(Reject { reason, extra_attributes })),
            (
                (opt(xml_string()), opt(method()), opt(any::<u32>()), opt(xml_string())),
                (opt(any::<u32>()), opt(any::<bool>()), opt(prop::sample::select(RecordTrim::ALL))),
                extras()
            )
                .prop_map(
                    |(
                        (action, method, timeout, finish_on_key),
                        (max_length, play_beep, trim),
                        extra_attributes,
                    )| {
                        Verb::Record(Record {
                            action,
                            method,
                            timeout,
                            finish_on_key,
                            max_length,
                            play_beep,
                            trim,
                            extra_attributes,
                        })
                    }
                ),
            element().prop_map(Verb::Other),
        ]
    }

    fn response() -> impl Strategy<Value = Response> {
        (proptest::collection::vec(verb(), 0..6), extras())
            .prop_map(|(verbs, extra_attributes)| Response { verbs, extra_attributes })
    }

    /// A document touching every verb, for mutation.
    const MUTATION_BASE: &str = r#"<?xml version="1.0"?><Response><Say voice="man" loop="1">a &amp; b<break/></Say><Play digits="1">u</Play><Pause length="2"/><Gather input="dtmf" timeout="3"><Say>x</Say></Gather><Dial record="true"><Number statusCallbackEvent="ringing">1</Number></Dial><Connect><Stream url="wss://h/m" track="both_tracks"><Parameter name="a" value="b"/></Stream></Connect><Start><Stream url="ws://h/f"/></Start><Stop><Stream name="f"/></Stop><Redirect method="GET">/r</Redirect><Reject reason="busy"/><Record trim="trim-silence" playBeep="true"/><Hangup/><Other a="1">t</Other></Response>"#;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_response_survives_write_then_parse(r in response()) {
            let xml = r.to_xml().expect("writes");
            prop_assert_eq!(Response::from_xml_with_limits(&xml, &ParseLimits { max_bytes: usize::MAX, ..ParseLimits::default() }), Ok(r));
        }

        #[test]
        fn mutated_documents_never_panic_and_what_parses_round_trips(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), 0..3u8, prop::sample::select(vec!["<", ">", "/", "&", ";", "\"", "'", "=", " ", "x", "#", "<!--", "]]>", "&#", "\u{0}", "é"])), 1..6),
        ) {
            let mut text = String::from(MUTATION_BASE);
            for (at, op, piece) in edits {
                let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).chain([text.len()]).collect();
                let i = boundaries[at.index(boundaries.len())];
                let next = boundaries.iter().copied().find(|&b| b > i).unwrap_or(i);
                match op {
                    0 => text.insert_str(i, piece),
                    1 => text.replace_range(i..next, ""),
                    _ => text.replace_range(i..next, piece),
                }
            }
            if let Ok(parsed) = Response::from_xml(&text) {
                let xml = parsed.to_xml().expect("what parses writes");
                let unbounded = ParseLimits { max_bytes: usize::MAX, ..ParseLimits::default() };
                prop_assert_eq!(Response::from_xml_with_limits(&xml, &unbounded), Ok(parsed));
            }
        }

        #[test]
        fn parsing_arbitrary_text_never_panics_and_what_parses_round_trips(
            prefix in prop::sample::select(vec!["", "<Response>", "<Response><Say>", "<Response><Connect><Stream url='wss://h/m'>"]),
            body in any::<String>(),
        ) {
            let text = format!("{prefix}{body}");
            if let Ok(parsed) = Response::from_xml(&text) {
                let xml = parsed.to_xml().expect("what parses writes");
                let unbounded = ParseLimits { max_bytes: usize::MAX, ..ParseLimits::default() };
                prop_assert_eq!(Response::from_xml_with_limits(&xml, &unbounded), Ok(parsed));
            }
        }
    }
}
