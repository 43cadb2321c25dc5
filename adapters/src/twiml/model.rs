//! Typed TwiML: `<Response>`, its verbs, their nouns, and builders.
//!
//! Every modelled attribute is an `Option` (absent means Twilio's default);
//! every element also carries `extra_attributes` for attributes this module
//! does not model (`<Gather language hints>`, `<Dial hangupOnStar>` …), kept
//! in document order.

use core::fmt;

use super::error::{TwimlError, excerpt};
use super::xml::{Attribute, Element, Node, collect_text, push_text_node};

/// Declares a keyword-valued attribute type: an enum with its TwiML spelling.
macro_rules! keywords {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident => $text:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value as TwiML spells it.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }

            /// The value TwiML spells `text` (case-sensitive), if any.
            #[must_use]
            pub fn from_keyword(text: &str) -> Option<Self> {
                match text {
                    $( $text => Some($name::$variant), )+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

keywords! {
    /// HTTP method Twilio uses for a callback (`method`, `statusCallbackMethod`).
    HttpMethod {
        /// `GET`.
        Get => "GET",
        /// `POST` (Twilio's default everywhere).
        Post => "POST",
    }
}

keywords! {
    /// Which audio a `<Stream>` carries (`track`).
    StreamTrack {
        /// `inbound_track`: what the caller says (the default; the only
        /// track a `<Connect><Stream>` may carry).
        InboundTrack => "inbound_track",
        /// `outbound_track`: what Twilio plays to the caller.
        OutboundTrack => "outbound_track",
        /// `both_tracks`.
        BothTracks => "both_tracks",
    }
}

keywords! {
    /// What a caller hears when `<Reject>` refuses the call (`reason`).
    RejectReason {
        /// `rejected`: a "not in service" message (the default).
        Rejected => "rejected",
        /// `busy`: a busy signal.
        Busy => "busy",
    }
}

keywords! {
    /// What `<Gather>` listens for (`input`, a space-separated list).
    GatherInput {
        /// `dtmf`: key presses (the default).
        Dtmf => "dtmf",
        /// `speech`: transcribed speech.
        Speech => "speech",
        /// `dtmf speech`: either.
        DtmfSpeech => "dtmf speech",
    }
}

keywords! {
    /// Whether and from when `<Dial>` records (`record`).
    DialRecord {
        /// `do-not-record` (the default).
        DoNotRecord => "do-not-record",
        /// `record-from-answer`: mono, from the answer.
        RecordFromAnswer => "record-from-answer",
        /// `record-from-ringing`: mono, from the first ring.
        RecordFromRinging => "record-from-ringing",
        /// `record-from-answer-dual`: one channel per leg, from the answer.
        RecordFromAnswerDual => "record-from-answer-dual",
        /// `record-from-ringing-dual`: one channel per leg, from the first ring.
        RecordFromRingingDual => "record-from-ringing-dual",
    }
}

keywords! {
    /// Whether `<Record>` trims leading and trailing silence (`trim`).
    RecordTrim {
        /// `trim-silence` (the default).
        TrimSilence => "trim-silence",
        /// `do-not-trim`.
        DoNotTrim => "do-not-trim",
    }
}

keywords! {
    /// A call progress event a `<Number>` reports to its `statusCallback`
    /// (`statusCallbackEvent`, a space-separated list).
    CallProgressEvent {
        /// `initiated`: Twilio started dialing.
        Initiated => "initiated",
        /// `ringing`: the called party's phone rings.
        Ringing => "ringing",
        /// `answered`: the called party answered.
        Answered => "answered",
        /// `completed`: the dialed call ended (the default).
        Completed => "completed",
    }
}

impl GatherInput {
    /// Reads a space-separated `input` list in any order (`speech dtmf`).
    #[must_use]
    pub fn from_list(text: &str) -> Option<Self> {
        let (mut dtmf, mut speech) = (false, false);
        for token in text.split_ascii_whitespace() {
            match token {
                "dtmf" => dtmf = true,
                "speech" => speech = true,
                _ => return None,
            }
        }
        match (dtmf, speech) {
            (true, true) => Some(GatherInput::DtmfSpeech),
            (true, false) => Some(GatherInput::Dtmf),
            (false, true) => Some(GatherInput::Speech),
            (false, false) => None,
        }
    }
}

impl DialRecord {
    /// Reads a `record` value, also taking the legacy `true` (record from
    /// answer) and `false` (do not record) that Twilio still accepts.
    #[must_use]
    pub fn from_value(text: &str) -> Option<Self> {
        match text {
            "true" => Some(DialRecord::RecordFromAnswer),
            "false" => Some(DialRecord::DoNotRecord),
            _ => DialRecord::from_keyword(text),
        }
    }
}

/// How long `<Gather>` waits after speech ends (`speechTimeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpeechTimeout {
    /// `auto`: Twilio decides when the caller has finished.
    Auto,
    /// Whole seconds of silence.
    Seconds(u32),
}

impl fmt::Display for SpeechTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpeechTimeout::Auto => f.write_str("auto"),
            SpeechTimeout::Seconds(s) => write!(f, "{s}"),
        }
    }
}

/// A `<Stream>` url: `ws://` or `wss://`, with a host, without query string
/// or fragment (Twilio drops query strings; values go in [`Parameter`]s).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StreamUrl(String);

impl StreamUrl {
    /// Checks `url` and keeps it as given.
    ///
    /// # Errors
    /// [`TwimlError::InvalidStreamUrl`] saying what is wrong.
    pub fn new(url: impl Into<String>) -> Result<Self, TwimlError> {
        let url = url.into();
        let invalid = |reason| Err(TwimlError::InvalidStreamUrl { url: excerpt(&url), reason });
        let lower = url.get(..6).map(str::to_ascii_lowercase).unwrap_or_default();
        let rest = if lower == "wss://" {
            url.get(6..)
        } else if lower.starts_with("ws://") {
            url.get(5..)
        } else {
            None
        };
        let Some(rest) = rest else {
            return invalid("the scheme must be wss:// (or ws:// for local tests)");
        };
        if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return invalid("URLs cannot contain whitespace or control characters");
        }
        if rest.contains('?') {
            return invalid("Twilio drops query strings: pass values as <Parameter>s");
        }
        if rest.contains('#') {
            return invalid("a WebSocket URL cannot have a fragment");
        }
        if rest.split('/').next().is_none_or(str::is_empty) {
            return invalid("the URL has no host");
        }
        Ok(StreamUrl(url))
    }

    /// The URL as given.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<&str> for StreamUrl {
    type Error = TwimlError;
    fn try_from(url: &str) -> Result<Self, TwimlError> {
        StreamUrl::new(url)
    }
}

impl TryFrom<String> for StreamUrl {
    type Error = TwimlError;
    fn try_from(url: String) -> Result<Self, TwimlError> {
        StreamUrl::new(url)
    }
}

/// Builder setters shared by every element: `fn name(self, value) -> Self`
/// for `Option` fields, plus `attribute` for an unmodelled attribute.
macro_rules! setters {
    ($ty:ident { $( $(#[$doc:meta])* $field:ident : $arg:ty $(=> $conv:ident)? ),* $(,)? }) => {
        impl $ty {
            $(
                $(#[$doc])*
                #[must_use]
                pub fn $field(mut self, value: $arg) -> Self {
                    self.$field = Some(setters!(@conv value $(, $conv)?));
                    self
                }
            )*

            /// Adds an attribute this module does not model; writing fails
            /// if `name` is not an XML name or repeats another attribute.
            #[must_use]
            pub fn attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
                self.extra_attributes.push(Attribute::new(name, value));
                self
            }
        }
    };
    (@conv $v:ident, into) => { $v.into() };
    (@conv $v:ident) => { $v };
}

/// `<Say>`: text to speech.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Say {
    /// `voice`: `man`, `woman`, `Polly.Amy`, `Google.en-GB-Standard-A` …
    pub voice: Option<String>,
    /// `language`: a locale such as `en-US`.
    pub language: Option<String>,
    /// `loop`: how many times to say it; 0 repeats until the call ends.
    pub loop_count: Option<u32>,
    /// What to say: text, and SSML elements (`<break>`, `<prosody>` …).
    pub content: Vec<Node>,
    /// Attributes this module does not model.
    pub extra_attributes: Vec<Attribute>,
}

impl Say {
    /// Says `text`.
    #[must_use]
    pub fn new(text: impl Into<String>) -> Self {
        let mut content = Vec::new();
        push_text_node(&mut content, text.into());
        Say { content, ..Say::default() }
    }

    /// Appends an SSML element to what is said.
    #[must_use]
    pub fn ssml(mut self, element: Element) -> Self {
        self.content.push(Node::Element(element));
        self
    }

    /// Everything said, SSML markup removed.
    #[must_use]
    pub fn text(&self) -> String {
        let mut out = String::new();
        collect_text(&self.content, &mut out);
        out
    }
}

setters!(Say {
    /// Sets `voice`.
    voice: impl Into<String> => into,
    /// Sets `language`.
    language: impl Into<String> => into,
    /// Sets `loop`.
    loop_count: u32,
});

impl From<&str> for Say {
    fn from(text: &str) -> Self {
        Say::new(text)
    }
}

impl From<String> for Say {
    fn from(text: String) -> Self {
        Say::new(text)
    }
}

/// `<Play>`: an audio file, or DTMF tones with `digits`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Play {
    /// The audio URL (the element's text); empty when playing `digits`.
    pub url: String,
    /// `loop`: how many times to play; 0 repeats until the call ends.
    pub loop_count: Option<u32>,
    /// `digits`: DTMF tones to play (`0`–`9`, `*`, `#`, `w` for a pause).
    pub digits: Option<String>,
    /// Attributes this module does not model.
    pub extra_attributes: Vec<Attribute>,
}

impl Play {
    /// Plays the audio at `url`.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Play { url: url.into(), ..Play::default() }
    }

    /// Plays DTMF `digits` instead of a file.
    #[must_use]
    pub fn dtmf(digits: impl Into<String>) -> Self {
        Play { digits: Some(digits.into()), ..Play::default() }
    }
}

setters!(Play {
    /// Sets `loop`.
    loop_count: u32,
    /// Sets `digits`.
    digits: impl Into<String> => into,
});

impl From<&str> for Play {
    fn from(url: &str) -> Self {
        Play::new(url)
    }
}

/// `<Pause>`: silence.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Pause {
    /// `length`: seconds (Twilio's default is 1).
    pub length: Option<u32>,
    /// Attributes this module does not model.
    pub extra_attributes: Vec<Attribute>,
}

impl Pause {
    /// A pause of Twilio's default length (1 s).
    #[must_use]
    pub fn new() -> Self {
        Pause::default()
    }

    /// A pause of `seconds`.
    #[must_use]
    pub fn seconds(seconds: u32) -> Self {
        Pause { length: Some(seconds), ..Pause::default() }
    }
}

setters!(Pause {
    /// Sets `length` in seconds.
    length: u32,
});

/// A verb `<Gather>` plays while it waits for input.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GatherPrompt {
    /// A nested `<Say>`.
    Say(Say),
    /// A nested `<Play>`.
    Play(Play),
    /// A nested `<Pause>`.
    Pause(Pause),
}

/// `<Gather>`: collects DTMF digits or speech, prompting with nested
/// `<Say>`, `<Play>` and `<Pause>` (the only verbs Twilio lets it nest).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Gather {
    /// `input`.
    pub input: Option<GatherInput>,
    /// `action`: where Twilio sends the result.
    pub action: Option<String>,
    /// `method` for `action`.
    pub method: Option<HttpMethod>,
    /// `timeout`: seconds of silence before giving up.
    pub timeout: Option<u32>,
    /// `numDigits`: stop after this many digits.
    pub num_digits: Option<u32>,
    /// `finishOnKey`: the key that ends input (`#` by default; empty for none).
    pub finish_on_key: Option<String>,
    /// `speechTimeout`.
    pub speech_timeout: Option<SpeechTimeout>,
    /// Nested prompts in order.
    pub prompts: Vec<GatherPrompt>,
    /// Attributes this module does not model.
    pub extra_attributes: Vec<Attribute>,
}

impl Gather {
    /// A `<Gather>` with Twilio's defaults and no prompt.
    #[must_use]
    pub fn new() -> Self {
        Gather::default()
    }

    /// Appends a nested `<Say>`.
    #[must_use]
    pub fn say(mut self, say: impl Into<Say>) -> Self {
        self.prompts.push(GatherPrompt::Say(say.into()));
        self
    }

    /// Appends a nested `<Play>`.
    #[must_use]
    pub fn play(mut self, play: impl Into<Play>) -> Self {
        self.prompts.push(GatherPrompt::Play(play.into()));
        self
    }

    /// Appends a nested `<Pause>`.
    #[must_use]
    pub fn pause(mut self, pause: Pause) -> Self {
        self.prompts.push(GatherPrompt::Pause(pause));
        self
    }
}

setters!(Gather {
    /// Sets `input`.
    input: GatherInput,
    /// Sets `action`.
    action: impl Into<String> => into,
    /// Sets `method`.
    method: HttpMethod,
    /// Sets `timeout` in seconds.
    timeout: u32,
    /// Sets `numDigits`.
    num_digits: u32,
    /// Sets `finishOnKey`.
    finish_on_key: impl Into<String> => into,
    /// Sets `speechTimeout`.
    speech_timeout: SpeechTimeout,
});

/// `<Number>`: a phone number `<Dial>` calls.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Number {
    /// The number (the element's text), E.164 preferably.
    pub number: String,
    /// `sendDigits`: DTMF to send once answered.
    pub send_digits: Option<String>,
    /// `url`: TwiML to run for the called party before connecting.
    pub url: Option<String>,
    /// `method` for `url`.
    pub method: Option<HttpMethod>,
    /// `statusCallbackEvent`: events to report (empty: Twilio's default).
    pub status_callback_event: Vec<CallProgressEvent>,
    /// `statusCallback`: where to report them.
    pub status_callback: Option<String>,
    /// `statusCallbackMethod`.
    pub status_callback_method: Option<HttpMethod>,
    /// Attributes this module does not model.
    pub extra_attributes: Vec<Attribute>,
}

impl Number {
    /// Dials `number`.
    #[must_use]
    pub fn new(number: impl Into<String>) -> Self {
        Number { number: number.into(), ..Number::default() }
    }

    /// Adds `event` to `statusCallbackEvent`.
    #[must_use]
    pub fn status_callback_event(mut self, event: CallProgressEvent) -> Self {
        self.status_callback_event.push(event);
        self
    }
}

setters!(Number {
    /// Sets `sendDigits`.
    send_digits: impl Into<String> => into,
    /// Sets `url`.
    url: impl Into<String> => into,
    /// Sets `method`.
    method: HttpMethod,
    /// Sets `statusCallback`.
    status_callback: impl Into<String> => into,
    /// Sets `statusCallbackMethod`.
    status_callback_method: HttpMethod,
});

impl From<&str> for Number {
    fn from(number: &str) -> Self {
        Number::new(number)
    }
}

/// A noun inside `<Dial>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DialNoun {
    /// `<Number>`.
    Number(Number),
    /// A noun this module does not model (`<Client>`, `<Sip>`,
    /// `<Conference>`, `<Queue>` …), kept verbatim.
    Other(Element),
}

/// Whom `<Dial>` calls.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DialTarget {
    /// A number as the element's text: `<Dial>415-123-4567</Dial>`. An
    /// empty `<Dial/>` reads back as `Number("")`.
    Number(String),
    /// Nouns: `<Dial><Number>…</Number><Number>…</Number></Dial>`.
    Nouns(Vec<DialNoun>),
}

impl Default for DialTarget {
    fn default() -> Self {
        DialTarget::Number(String::new())
    }
}

/// `<Dial>`: connects the caller to another party.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Dial {
    /// `action`: where Twilio reports the outcome and gets the next TwiML.
    pub action: Option<String>,
    /// `method` for `action`.
    pub method: Option<HttpMethod>,
    /// `timeout`: seconds to let the called party ring.
    pub timeout: Option<u32>,
    /// `callerId` shown to the called party.
    pub caller_id: Option<String>,
    /// `record`.
    pub record: Option<DialRecord>,
    /// `timeLimit`: longest call in seconds.
    pub time_limit: Option<u32>,
    /// `answerOnBridge`: keep the caller ringing until the called party answers.
    pub answer_on_bridge: Option<bool>,
    /// Whom to call.
    pub target: DialTarget,
    /// Attributes this module does not model.
    pub extra_attributes: Vec<Attribute>,
}

impl Dial {
    /// Dials `number`, given as the element's text.
    #[must_use]
    pub fn number(number: impl Into<String>) -> Self {
        Dial { target: DialTarget::Number(number.into()), ..Dial::default() }
    }

    /// Dials the given nouns (all at once, first to answer wins).
    #[must_use]
    pub fn nouns(nouns: impl IntoIterator<Item = DialNoun>) -> Self {
        Dial { target: DialTarget::Nouns(nouns.into_iter().collect()), ..Dial::default() }
    }

    /// Adds a `<Number>` noun. A plain-text number set before becomes a
    /// `<Number>` noun too, so both are dialed.
    #[must_use]
    pub fn add_number(self, number: impl Into<Number>) -> Self {
        self.add_noun(DialNoun::Number(number.into()))
    }

    /// Adds a noun (see [`Self::add_number`] about a plain-text number).
    #[must_use]
    pub fn add_noun(mut self, noun: DialNoun) -> Self {
        match &mut self.target {
            DialTarget::Nouns(nouns) => nouns.push(noun),
            DialTarget::Number(text) => {
                let mut nouns = Vec::new();
                if !text.is_empty() {
                    nouns.push(DialNoun::Number(Number::new(core::mem::take(text))));
                }
                nouns.push(noun);
                self.target = DialTarget::Nouns(nouns);
            }
        }
        self
    }
}

setters!(Dial {
    /// Sets `action`.
    action: impl Into<String> => into,
    /// Sets `method`.
    method: HttpMethod,
    /// Sets `timeout` in seconds.
    timeout: u32,
    /// Sets `callerId`.
    caller_id: impl Into<String> => into,
    /// Sets `record`.
    record: DialRecord,
    /// Sets `timeLimit` in seconds.
    time_limit: u32,
    /// Sets `answerOnBridge`.
    answer_on_bridge: bool,
});

impl From<&str> for Dial {
    fn from(number: &str) -> Self {
        Dial::number(number)
    }
}

/// `<Parameter>`: a name/value pair a `<Stream>` passes to the WebSocket
/// server in `start.customParameters`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Parameter {
    /// `name`.
    pub name: String,
    /// `value`.
    pub value: String,
    /// Attributes this module does not model.
    pub extra_attributes: Vec<Attribute>,
}

impl Parameter {
    /// `<Parameter name="…" value="…"/>`.
    #[must_use]
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Parameter { name: name.into(), value: value.into(), extra_attributes: Vec::new() }
    }

    /// Adds an attribute this module does not model.
    #[must_use]
    pub fn attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_attributes.push(Attribute::new(name, value));
        self
    }
}

/// `<Stream>` inside `<Connect>` or `<Start>`: a Media Streams WebSocket.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Stream {
    /// `url`, checked when the `Stream` is made.
    pub url: StreamUrl,
    /// `name`: unique per call; `<Stop><Stream name>` uses it.
    pub name: Option<String>,
    /// `track`.
    pub track: Option<StreamTrack>,
    /// `statusCallback`: where Twilio reports stream events.
    pub status_callback: Option<String>,
    /// `statusCallbackMethod`.
    pub status_callback_method: Option<HttpMethod>,
    /// `<Parameter>` children in order.
    pub parameters: Vec<Parameter>,
    /// Attributes this module does not model.
    pub extra_attributes: Vec<Attribute>,
}

impl Stream {
    /// A stream to `url`.
    ///
    /// # Errors
    /// [`TwimlError::InvalidStreamUrl`] unless `url` is `ws://` or `wss://`
    /// with a host and without query string or fragment.
    pub fn new(url: impl Into<String>) -> Result<Self, TwimlError> {
        Ok(Stream::from_url(StreamUrl::new(url)?))
    }

    /// A stream to an already checked `url`.
    #[must_use]
    pub fn from_url(url: StreamUrl) -> Self {
        Stream {
            url,
            name: None,
            track: None,
            status_callback: None,
            status_callback_method: None,
            parameters: Vec::new(),
            extra_attributes: Vec::new(),
        }
    }

    /// Appends `<Parameter name="…" value="…"/>`.
    #[must_use]
    pub fn parameter(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.parameters.push(Parameter::new(name, value));
        self
    }

    /// The value of the first parameter called `name`.
    #[must_use]
    pub fn parameter_value(&self, name: &str) -> Option<&str> {
        self.parameters.iter().find(|p| p.name == name).map(|p| p.value.as_str())
    }
}

setters!(Stream {
    /// Sets `name`.
    name: impl Into<String> => into,
    /// Sets `track`.
    track: StreamTrack,
    /// Sets `statusCallback`.
    status_callback: impl Into<String> => into,
    /// Sets `statusCallbackMethod`.
    status_callback_method: HttpMethod,
});

/// A noun inside `<Connect>` or `<Start>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MediaNoun {
    /// `<Stream>`.
    Stream(Stream),
    /// A noun this module does not model (`<Room>`, `<ConversationRelay>`,
    /// `<Siprec>`, `<Transcription>` …), kept verbatim.
    Other(Element),
}

/// `<Connect>`: hands the call to a bidirectional `<Stream>` (or another
/// noun) until it ends; the document continues after it then.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Connect {
    /// `action`: where Twilio goes when the connection ends.
    pub action: Option<String>,
    /// `method` for `action`.
    pub method: Option<HttpMethod>,
    /// Nouns in order.
    pub nouns: Vec<MediaNoun>,
    /// Attributes this module does not model.
    pub extra_attributes: Vec<Attribute>,
}

impl Connect {
    /// An empty `<Connect>`.
    #[must_use]
    pub fn new() -> Self {
        Connect::default()
    }

    /// Appends a `<Stream>`.
    #[must_use]
    pub fn stream(mut self, stream: Stream) -> Self {
        self.nouns.push(MediaNoun::Stream(stream));
        self
    }

    /// Appends a noun this module does not model.
    #[must_use]
    pub fn other(mut self, noun: Element) -> Self {
        self.nouns.push(MediaNoun::Other(noun));
        self
    }
}

setters!(Connect {
    /// Sets `action`.
    action: impl Into<String> => into,
    /// Sets `method`.
    method: HttpMethod,
});

/// `<Start>`: forks media to a one-way `<Stream>` and continues at once.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Start {
    /// `action`.
    pub action: Option<String>,
    /// `method` for `action`.
    pub method: Option<HttpMethod>,
    /// Nouns in order.
    pub nouns: Vec<MediaNoun>,
    /// Attributes this module does not model.
    pub extra_attributes: Vec<Attribute>,
}

impl Start {
    /// An empty `<Start>`.
    #[must_use]
    pub fn new() -> Self {
        Start::default()
    }

    /// Appends a `<Stream>`.
    #[must_use]
    pub fn stream(mut self, stream: Stream) -> Self {
        self.nouns.push(MediaNoun::Stream(stream));
        self
    }

    /// Appends a noun this module does not model.
    #[must_use]
    pub fn other(mut self, noun: Element) -> Self {
        self.nouns.push(MediaNoun::Other(noun));
        self
    }
}

setters!(Start {
    /// Sets `action`.
    action: impl Into<String> => into,
    /// Sets `method`.
    method: HttpMethod,
});

/// `<Stream>` inside `<Stop>`: names the fork to stop.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct StopStream {
    /// `name` given to the stream in `<Start><Stream name>`.
    pub name: String,
    /// Attributes this module does not model.
    pub extra_attributes: Vec<Attribute>,
}

/// A noun inside `<Stop>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StopNoun {
    /// `<Stream name="…"/>`.
    Stream(StopStream),
    /// A noun this module does not model (`<Siprec>` …), kept verbatim.
    Other(Element),
}

/// `<Stop>`: stops forks started with `<Start>`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Stop {
    /// Nouns in order.
    pub nouns: Vec<StopNoun>,
    /// Attributes this module does not model.
    pub extra_attributes: Vec<Attribute>,
}

impl Stop {
    /// An empty `<Stop>`.
    #[must_use]
    pub fn new() -> Self {
        Stop::default()
    }

    /// Appends `<Stream name="…"/>`.
    #[must_use]
    pub fn stream(mut self, name: impl Into<String>) -> Self {
        self.nouns.push(StopNoun::Stream(StopStream { name: name.into(), extra_attributes: Vec::new() }));
        self
    }
}

/// `<Hangup>`: ends the call.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Hangup {
    /// Attributes this module does not model.
    pub extra_attributes: Vec<Attribute>,
}

/// `<Redirect>`: continues with the TwiML at another URL.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Redirect {
    /// The URL (the element's text).
    pub url: String,
    /// `method`.
    pub method: Option<HttpMethod>,
    /// Attributes this module does not model.
    pub extra_attributes: Vec<Attribute>,
}

impl Redirect {
    /// Redirects to `url`.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Redirect { url: url.into(), ..Redirect::default() }
    }
}

setters!(Redirect {
    /// Sets `method`.
    method: HttpMethod,
});

impl From<&str> for Redirect {
    fn from(url: &str) -> Self {
        Redirect::new(url)
    }
}

/// `<Reject>`: refuses an incoming call without answering (no charge).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Reject {
    /// `reason`.
    pub reason: Option<RejectReason>,
    /// Attributes this module does not model.
    pub extra_attributes: Vec<Attribute>,
}

impl Reject {
    /// Rejects with Twilio's default reason.
    #[must_use]
    pub fn new() -> Self {
        Reject::default()
    }
}

setters!(Reject {
    /// Sets `reason`.
    reason: RejectReason,
});

/// `<Record>`: records the caller.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Record {
    /// `action`: where Twilio sends the recording's URL.
    pub action: Option<String>,
    /// `method` for `action`.
    pub method: Option<HttpMethod>,
    /// `timeout`: seconds of silence that end the recording.
    pub timeout: Option<u32>,
    /// `finishOnKey`: keys that end the recording.
    pub finish_on_key: Option<String>,
    /// `maxLength`: longest recording in seconds.
    pub max_length: Option<u32>,
    /// `playBeep` before recording.
    pub play_beep: Option<bool>,
    /// `trim`.
    pub trim: Option<RecordTrim>,
    /// Attributes this module does not model.
    pub extra_attributes: Vec<Attribute>,
}

impl Record {
    /// A `<Record>` with Twilio's defaults.
    #[must_use]
    pub fn new() -> Self {
        Record::default()
    }
}

setters!(Record {
    /// Sets `action`.
    action: impl Into<String> => into,
    /// Sets `method`.
    method: HttpMethod,
    /// Sets `timeout` in seconds.
    timeout: u32,
    /// Sets `finishOnKey`.
    finish_on_key: impl Into<String> => into,
    /// Sets `maxLength` in seconds.
    max_length: u32,
    /// Sets `playBeep`.
    play_beep: bool,
    /// Sets `trim`.
    trim: RecordTrim,
});

/// One verb of a `<Response>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Verb {
    /// `<Say>`.
    Say(Say),
    /// `<Play>`.
    Play(Play),
    /// `<Pause>`.
    Pause(Pause),
    /// `<Gather>`.
    Gather(Gather),
    /// `<Dial>`.
    Dial(Dial),
    /// `<Connect>`.
    Connect(Connect),
    /// `<Start>`.
    Start(Start),
    /// `<Stop>`.
    Stop(Stop),
    /// `<Hangup>`.
    Hangup(Hangup),
    /// `<Redirect>`.
    Redirect(Redirect),
    /// `<Reject>`.
    Reject(Reject),
    /// `<Record>`.
    Record(Record),
    /// A verb this module does not model (`<Enqueue>`, `<Pay>`, `<Refer>` …,
    /// or a misspelt `<say>`: names are case-sensitive), kept verbatim so a
    /// simulator can report it and go on with the next verb, as Twilio does.
    Other(Element),
}

macro_rules! verb_from {
    ($($ty:ident),*) => {
        $(impl From<$ty> for Verb {
            fn from(verb: $ty) -> Self {
                Verb::$ty(verb)
            }
        })*
    };
}

verb_from!(Say, Play, Pause, Gather, Dial, Connect, Start, Stop, Hangup, Redirect, Reject, Record);

/// `<Response>`: a TwiML voice document, the verbs Twilio executes in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Response {
    /// Verbs in order.
    pub verbs: Vec<Verb>,
    /// Attributes on `<Response>` itself (TwiML defines none).
    pub extra_attributes: Vec<Attribute>,
}

impl Response {
    /// An empty `<Response/>` (what Twilio expects from a status callback
    /// answered with 200).
    #[must_use]
    pub fn new() -> Self {
        Response::default()
    }

    /// Appends any verb.
    #[must_use]
    pub fn verb(mut self, verb: impl Into<Verb>) -> Self {
        self.verbs.push(verb.into());
        self
    }

    /// Appends `<Say>`; a `&str` says that text.
    #[must_use]
    pub fn say(self, say: impl Into<Say>) -> Self {
        self.verb(say.into())
    }

    /// Appends `<Play>`; a `&str` is the audio URL.
    #[must_use]
    pub fn play(self, play: impl Into<Play>) -> Self {
        self.verb(play.into())
    }

    /// Appends `<Pause>`.
    #[must_use]
    pub fn pause(self, pause: Pause) -> Self {
        self.verb(pause)
    }

    /// Appends `<Gather>`.
    #[must_use]
    pub fn gather(self, gather: Gather) -> Self {
        self.verb(gather)
    }

    /// Appends `<Dial>`; a `&str` is a plain-text number.
    #[must_use]
    pub fn dial(self, dial: impl Into<Dial>) -> Self {
        self.verb(dial.into())
    }

    /// Appends `<Connect>`.
    #[must_use]
    pub fn connect(self, connect: Connect) -> Self {
        self.verb(connect)
    }

    /// Appends `<Connect><Stream/></Connect>`: a bidirectional stream.
    #[must_use]
    pub fn connect_stream(self, stream: Stream) -> Self {
        self.verb(Connect::new().stream(stream))
    }

    /// Appends `<Start>`.
    #[must_use]
    pub fn start(self, start: Start) -> Self {
        self.verb(start)
    }

    /// Appends `<Start><Stream/></Start>`: a one-way fork.
    #[must_use]
    pub fn start_stream(self, stream: Stream) -> Self {
        self.verb(Start::new().stream(stream))
    }

    /// Appends `<Stop>`.
    #[must_use]
    pub fn stop(self, stop: Stop) -> Self {
        self.verb(stop)
    }

    /// Appends `<Stop><Stream name="…"/></Stop>`.
    #[must_use]
    pub fn stop_stream(self, name: impl Into<String>) -> Self {
        self.verb(Stop::new().stream(name))
    }

    /// Appends `<Hangup/>`.
    #[must_use]
    pub fn hangup(self) -> Self {
        self.verb(Hangup::default())
    }

    /// Appends `<Redirect>`; a `&str` is the URL.
    #[must_use]
    pub fn redirect(self, redirect: impl Into<Redirect>) -> Self {
        self.verb(redirect.into())
    }

    /// Appends `<Reject>`.
    #[must_use]
    pub fn reject(self, reject: Reject) -> Self {
        self.verb(reject)
    }

    /// Appends `<Record>`.
    #[must_use]
    pub fn record(self, record: Record) -> Self {
        self.verb(record)
    }

    /// The `<Stream>` of the first `<Connect>` that holds one: where a
    /// bidirectional media stream goes, and its parameters.
    #[must_use]
    pub fn bidirectional_stream(&self) -> Option<&Stream> {
        self.verbs.iter().find_map(|verb| match verb {
            Verb::Connect(connect) => connect.nouns.iter().find_map(|noun| match noun {
                MediaNoun::Stream(stream) => Some(stream),
                MediaNoun::Other(_) => None,
            }),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_spell_as_twilio_does_and_read_back() {
        assert_eq!(HttpMethod::Get.as_str(), "GET");
        assert_eq!(StreamTrack::BothTracks.as_str(), "both_tracks");
        assert_eq!(DialRecord::RecordFromRingingDual.as_str(), "record-from-ringing-dual");
        assert_eq!(RecordTrim::DoNotTrim.as_str(), "do-not-trim");
        assert_eq!(GatherInput::DtmfSpeech.as_str(), "dtmf speech");
        for &m in HttpMethod::ALL {
            assert_eq!(HttpMethod::from_keyword(m.as_str()), Some(m));
        }
        for &t in StreamTrack::ALL {
            assert_eq!(StreamTrack::from_keyword(t.as_str()), Some(t));
        }
        assert_eq!(HttpMethod::from_keyword("post"), None, "keywords are case-sensitive");
    }

    #[test]
    fn gather_input_reads_lists_in_any_order() {
        assert_eq!(GatherInput::from_list("speech dtmf"), Some(GatherInput::DtmfSpeech));
        assert_eq!(GatherInput::from_list(" dtmf  "), Some(GatherInput::Dtmf));
        assert_eq!(GatherInput::from_list("speech"), Some(GatherInput::Speech));
        assert_eq!(GatherInput::from_list(""), None);
        assert_eq!(GatherInput::from_list("dtmf voice"), None);
    }

    #[test]
    fn dial_record_takes_legacy_booleans() {
        assert_eq!(DialRecord::from_value("true"), Some(DialRecord::RecordFromAnswer));
        assert_eq!(DialRecord::from_value("false"), Some(DialRecord::DoNotRecord));
        assert_eq!(DialRecord::from_value("record-from-ringing"), Some(DialRecord::RecordFromRinging));
        assert_eq!(DialRecord::from_value("yes"), None);
    }

    #[test]
    fn stream_url_accepts_websocket_urls_only() {
        for ok in
            ["wss://proxy.example.com/twilio/media", "ws://127.0.0.1:8080/media", "WSS://h", "wss://h/a&b"]
        {
            assert_eq!(StreamUrl::new(ok).map(|u| u.as_str().to_owned()), Ok(ok.to_owned()));
        }
        for (bad, reason) in [
            ("https://example.com/media", "the scheme must be wss:// (or ws:// for local tests)"),
            ("wss:/example.com", "the scheme must be wss:// (or ws:// for local tests)"),
            ("", "the scheme must be wss:// (or ws:// for local tests)"),
            ("wss://example.com/media?token=1", "Twilio drops query strings: pass values as <Parameter>s"),
            ("wss://example.com/media#x", "a WebSocket URL cannot have a fragment"),
            ("wss://", "the URL has no host"),
            ("wss:///path", "the URL has no host"),
            ("wss://exa mple.com", "URLs cannot contain whitespace or control characters"),
        ] {
            assert_eq!(
                StreamUrl::new(bad),
                Err(TwimlError::InvalidStreamUrl { url: bad.to_owned(), reason }),
                "{bad}"
            );
        }
    }

    #[test]
    fn dial_add_number_keeps_a_plain_number() {
        let dial = Dial::number("+15550001111").add_number("+15550002222");
        assert_eq!(
            dial.target,
            DialTarget::Nouns(vec![
                DialNoun::Number(Number::new("+15550001111")),
                DialNoun::Number(Number::new("+15550002222")),
            ])
        );
        let dial = Dial::default().add_number("+15550002222");
        assert_eq!(dial.target, DialTarget::Nouns(vec![DialNoun::Number(Number::new("+15550002222"))]));
    }

    #[test]
    fn say_text_drops_ssml_markup() {
        let say = Say::new("Hello ")
            .ssml(Element::new("break").attribute("time", "1s"))
            .ssml(Element::new("emphasis").text("there"));
        assert_eq!(say.text(), "Hello there");
        assert!(Say::new("").content.is_empty());
    }

    #[test]
    fn bidirectional_stream_finds_the_first_connect_stream() {
        let fork = Stream::new("wss://fork.example/a").unwrap();
        let media = Stream::new("wss://proxy.example/media").unwrap().parameter("CallSid", "CA1");
        let response = Response::new()
            .start_stream(fork)
            .connect(Connect::new().other(Element::new("Room").text("r")))
            .connect_stream(media.clone());
        assert_eq!(response.bidirectional_stream(), Some(&media));
        assert_eq!(media.parameter_value("CallSid"), Some("CA1"));
        assert_eq!(Response::new().say("hi").bidirectional_stream(), None);
    }
}
