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
const CONNECT: &[&str] = &["action", "method"];
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
        Verb::Hangup(v) => container::<()>(
            w,
            "Hangup",
            &[],
            |w| w.extra_attributes("Hangup", &[], &v.extra_attributes),
            |_, ()| Ok(()),
        ),
        Verb::Redirect(v) => text_element(w, "Redirect", &v.url, |w| {
            opt_display(w, "Redirect", "method", v.method)?;
            w.extra_attributes("Redirect", REDIRECT, &v.extra_attributes)
        }),
        Verb::Reject(v) => container::<()>(
            w,
            "Reject",
            &[],
            |w| {
                opt_display(w, "Reject", "reason", v.reason)?;
                w.extra_attributes("Reject", REJECT, &v.extra_attributes)
            },
            |_, ()| Ok(()),
        ),
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
    container::<()>(
        w,
        "Pause",
        &[],
        |w| {
            opt_display(w, "Pause", "length", p.length)?;
            w.extra_attributes("Pause", PAUSE, &p.extra_attributes)
        },
        |_, ()| Ok(()),
    )
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
            w.extra_attributes(name, CONNECT, extra)
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
            container::<()>(
                w,
                "Parameter",
                &[],
                |w| {
                    w.attribute("Parameter", "name", &p.name)?;
                    w.attribute("Parameter", "value", &p.value)?;
                    w.extra_attributes("Parameter", PARAMETER, &p.extra_attributes)
                },
                |_, ()| Ok(()),
            )
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
            StopNoun::Stream(s) => container::<()>(
                w,
                "Stream",
                &[],
                |w| {
                    w.attribute("Stream", "name", &s.name)?;
                    w.extra_attributes("Stream", STOP_STREAM, &s.extra_attributes)
                },
                |_, ()| Ok(()),
            ),
            StopNoun::Other(e) => w.element(e),
        },
    )
}

fn write_record(w: &mut XmlWriter<'_>, r: &Record) -> Written {
    const R: &str = "Record";
    container::<()>(
        w,
        R,
        &[],
        |w| {
            opt_str(w, R, "action", r.action.as_ref())?;
            opt_display(w, R, "method", r.method)?;
            opt_display(w, R, "timeout", r.timeout)?;
            opt_str(w, R, "finishOnKey", r.finish_on_key.as_ref())?;
            opt_display(w, R, "maxLength", r.max_length)?;
            opt_display(w, R, "playBeep", r.play_beep)?;
            opt_display(w, R, "trim", r.trim)?;
            w.extra_attributes(R, RECORD, &r.extra_attributes)
        },
        |_, ()| Ok(()),
    )
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
