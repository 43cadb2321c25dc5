//! The control plane's view of the calls: the session directory behind
//! `/v1/sessions` and the event hub behind `/v1/events`.
//!
//! Workers register a call when Twilio's `start` names its stream and remove
//! it when the call's record is written; neither happens per frame. The
//! control API reaches a call only through its command channel, so a
//! `DELETE` never touches the call's state from another thread.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;

use futures_util::task::AtomicWaker;
use serde::Serialize;
use tokio::sync::broadcast;
use voxproxy_adapters::bridge::{BridgeEvent, CallStats};

use crate::cdr::{BotRecord, LatencyRecord};

/// What the control plane can ask of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallCommand {
    /// End the call now (`DELETE /v1/sessions/{streamSid}`).
    Hangup,
    /// A PBX's re-INVITE or UPDATE on a `sip.listen` call moved or held
    /// the media: apply it to the call's bridge.
    Media(voxproxy_adapters::sip::Media),
}

/// A call's command inbox, shared by the call and the directory.
///
/// Not a tokio `mpsc` channel: that one costs about 2 KB a call (a 512-byte
/// cache-padded channel and a first block of 32 slots) for a queue that
/// holds nothing for almost every call's whole life. This is one small
/// allocation, and the call's loop checks it with one atomic load a turn.
#[derive(Debug)]
struct Inbox {
    queue: Mutex<VecDeque<CallCommand>>,
    /// `queue.len()`, readable without the lock.
    waiting: AtomicUsize,
    waker: AtomicWaker,
    /// The call stopped listening (its receiver is gone).
    closed: AtomicBool,
    capacity: usize,
}

/// The sending side of a call's commands (the directory keeps one).
#[derive(Clone, Debug)]
pub struct CommandSender(Arc<Inbox>);

/// The call's side of its commands.
#[derive(Debug)]
pub struct CommandReceiver(Arc<Inbox>);

/// A call's command inbox holding at most `capacity` commands.
#[must_use]
pub fn command_channel(capacity: usize) -> (CommandSender, CommandReceiver) {
    let inbox = Arc::new(Inbox {
        queue: Mutex::new(VecDeque::new()),
        waiting: AtomicUsize::new(0),
        waker: AtomicWaker::new(),
        closed: AtomicBool::new(false),
        capacity,
    });
    (CommandSender(Arc::clone(&inbox)), CommandReceiver(inbox))
}

impl CommandSender {
    /// Queues `command`; `false` when the call has stopped listening or
    /// already has `capacity` commands waiting.
    pub fn try_send(&self, command: CallCommand) -> bool {
        let inbox = &*self.0;
        if inbox.closed.load(Ordering::Acquire) {
            return false;
        }
        {
            let mut queue = lock(&inbox.queue);
            if queue.len() >= inbox.capacity {
                return false;
            }
            queue.push_back(command);
            inbox.waiting.store(queue.len(), Ordering::Release);
        }
        inbox.waker.wake();
        true
    }
}

impl CommandReceiver {
    /// The next waiting command, if any (no lock when there is none).
    pub fn try_recv(&mut self) -> Option<CallCommand> {
        let inbox = &*self.0;
        if inbox.waiting.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut queue = lock(&inbox.queue);
        let command = queue.pop_front();
        inbox.waiting.store(queue.len(), Ordering::Release);
        command
    }

    /// The next command. Cancel-safe: a command is taken only when returned.
    pub async fn recv(&mut self) -> CallCommand {
        std::future::poll_fn(|cx| {
            if let Some(command) = self.try_recv() {
                return Poll::Ready(command);
            }
            self.0.waker.register(cx.waker());
            // A command queued between the check and the registration woke
            // nobody: look again.
            self.try_recv().map_or(Poll::Pending, Poll::Ready)
        })
        .await
    }
}

impl Drop for CommandReceiver {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
    }
}

/// What `/v1/sessions` shows of a call.
#[derive(Clone, Debug, Serialize)]
pub struct SessionInfo {
    /// `MZ…`.
    pub stream_sid: String,
    /// `CA…`.
    pub call_sid: String,
    /// `AC…`.
    pub account_sid: String,
    /// Caller, when the webhook passed it on.
    pub from: Option<String>,
    /// Called number, when the webhook passed it on.
    pub to: Option<String>,
    /// RFC 3339 UTC.
    pub started_at: String,
    /// The route the stream names (`routes[N]` or `default`), when it names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Worker thread carrying the call.
    pub worker: usize,
    /// Local RTP port of the call (0 on a `ws` leg, which has none).
    pub rtp_port: u16,
    /// The backend leg: `rtp`, `sip`, or `ws` for a WebSocket bot. Shown
    /// as the `kind` of [`SessionView::leg`], not on its own.
    #[serde(skip)]
    pub leg: &'static str,
}

/// A call's entry: its fixed facts, its latest counters (refreshed about
/// once a second by the call itself) and its command channel.
#[derive(Debug)]
struct Entry {
    info: SessionInfo,
    published: Arc<Mutex<Published>>,
    commands: CommandSender,
}

/// What a call publishes of itself, behind one lock: one allocation per
/// call rather than one per part (issue 13 counts memory per call).
#[derive(Debug)]
struct Published {
    stats: CallStats,
    latency: LatencyRecord,
    /// Boxed: only `ws` legs have one.
    bot: Option<Box<BotRecord>>,
    leg: LegView,
}

/// A call's handle on its own directory entry; dropping it removes the entry.
#[derive(Debug)]
pub struct Registration {
    directory: Arc<Directory>,
    stream_sid: String,
    published: Arc<Mutex<Published>>,
}

impl Registration {
    /// Publishes the call's latest counters for `GET /v1/sessions/{sid}`;
    /// returns the ones published before, which are what the call last
    /// counted in metrics (so the call keeps no copy of its own).
    pub fn publish(&self, stats: &CallStats) -> CallStats {
        std::mem::replace(&mut lock(&self.published).stats, *stats)
    }

    /// Publishes the call's latency breakdown, likewise.
    pub fn publish_latency(&self, latency: LatencyRecord) {
        lock(&self.published).latency = latency;
    }

    /// Publishes a `ws` leg's protocol and counters.
    pub fn publish_bot(&self, bot: &BotRecord) {
        match &mut lock(&self.published).bot {
            Some(published) => (**published).clone_from(bot),
            none => *none = Some(Box::new(bot.clone())),
        }
    }

    /// Publishes where the call's backend leg stands.
    pub fn publish_leg(&self, leg: LegView) {
        lock(&self.published).leg = leg;
    }
}

/// The backend leg of a session as the control API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LegView {
    /// `rtp`, `sip` or `ws`.
    pub kind: &'static str,
    /// SIP only: `calling`, `early`, `confirmed`, `cancelling`, `terminating`, `ended`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
    /// SIP only: the dialog's Call-ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// SIP only: the final response to the INVITE, once there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_status: Option<u16>,
}

impl Default for LegView {
    fn default() -> Self {
        LegView { kind: "rtp", state: None, call_id: None, final_status: None }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.directory.remove(&self.stream_sid);
    }
}

/// A session as the control API returns it.
#[derive(Clone, Debug, Serialize)]
pub struct SessionView {
    /// Fixed facts.
    #[serde(flatten)]
    pub info: SessionInfo,
    /// Counters as of the call's last refresh.
    pub stats: StatsView,
    /// Where each millisecond went, as of the call's last refresh.
    pub latency: LatencyRecord,
    /// A `ws` leg's protocol and counters, as of the call's last refresh.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bot: Option<BotRecord>,
    /// The backend leg.
    pub leg: LegView,
}

/// The subset of [`CallStats`] the control API shows, with stable names.
#[derive(Clone, Copy, Debug, Serialize)]
#[allow(missing_docs)]
pub struct StatsView {
    pub inbound_frames: u64,
    pub outbound_frames: u64,
    pub rtp_packets_in: u64,
    pub rtp_packets_out: u64,
    pub rtp_lost: u64,
    pub rtp_late: u64,
    pub concealed_frames: u64,
    pub jitter_us: u64,
    pub vad_segments: u64,
    pub barge_ins: u64,
    pub dtmf_digits: u64,
    pub marks_sent: u64,
    pub marks_played: u64,
    pub marks_cleared: u64,
}

impl From<&CallStats> for StatsView {
    fn from(s: &CallStats) -> Self {
        StatsView {
            inbound_frames: s.twilio_frames_in,
            outbound_frames: s.twilio_frames_out,
            rtp_packets_in: s.rtp_packets_in,
            rtp_packets_out: s.rtp_packets_out,
            rtp_lost: s.rtp_lost,
            rtp_late: s.rtp_late,
            concealed_frames: s.concealed_frames,
            jitter_us: s.jitter_us,
            vad_segments: s.vad_segments,
            barge_ins: s.barge_ins,
            dtmf_digits: s.dtmf_digits,
            marks_sent: s.marks_sent,
            marks_played: s.marks_played,
            marks_cleared: s.marks_cleared,
        }
    }
}

/// Every call that has started, by stream SID.
#[derive(Debug, Default)]
pub struct Directory {
    /// Boxed entries: the table holds a slot for every call and as many
    /// again spare after it grows, so an entry inline (about 220 bytes)
    /// cost twice its size per call.
    entries: Mutex<HashMap<String, Box<Entry>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a single map or struct operation, so a
    // panic elsewhere cannot leave the data half-written.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Directory {
    /// An empty directory.
    #[must_use]
    pub fn new() -> Arc<Self> {
        Arc::new(Directory::default())
    }

    /// Adds a call. `None` when a call with this stream SID is already
    /// registered (a replayed `start`): the second one stays out of the
    /// directory rather than hiding the first.
    pub fn register(self: &Arc<Self>, info: SessionInfo, commands: CommandSender) -> Option<Registration> {
        let stream_sid = info.stream_sid.clone();
        let published = Arc::new(Mutex::new(Published {
            stats: CallStats::default(),
            latency: LatencyRecord::default(),
            bot: None,
            leg: LegView { kind: info.leg, ..LegView::default() },
        }));
        let mut entries = lock(&self.entries);
        if entries.contains_key(&stream_sid) {
            return None;
        }
        let entry = Entry { info, published: Arc::clone(&published), commands };
        entries.insert(stream_sid.clone(), Box::new(entry));
        Some(Registration { directory: Arc::clone(self), stream_sid, published })
    }

    /// Every call's fixed facts (what the store's registry keeps), without
    /// the counters `list` copies.
    #[must_use]
    pub fn infos(&self) -> Vec<SessionInfo> {
        lock(&self.entries).values().map(|e| e.info.clone()).collect()
    }

    /// Whether this instance carries the call with this stream SID.
    #[must_use]
    pub fn contains(&self, stream_sid: &str) -> bool {
        lock(&self.entries).contains_key(stream_sid)
    }

    fn remove(&self, stream_sid: &str) {
        lock(&self.entries).remove(stream_sid);
    }

    /// How many calls are registered.
    #[must_use]
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    /// Whether no call is registered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every session, ordered by start time then stream SID.
    #[must_use]
    pub fn list(&self) -> Vec<SessionView> {
        let mut views: Vec<SessionView> = lock(&self.entries).values().map(|e| view(e)).collect();
        views.sort_by(|a, b| {
            (&a.info.started_at, &a.info.stream_sid).cmp(&(&b.info.started_at, &b.info.stream_sid))
        });
        views
    }

    /// One session.
    #[must_use]
    pub fn get(&self, stream_sid: &str) -> Option<SessionView> {
        lock(&self.entries).get(stream_sid).map(|e| view(e))
    }

    /// Asks a call to do something. `false` when there is no such call (or
    /// it is already ending and has stopped listening).
    #[must_use]
    pub fn command(&self, stream_sid: &str, command: CallCommand) -> bool {
        let sender = lock(&self.entries).get(stream_sid).map(|e| e.commands.clone());
        sender.is_some_and(|s| s.try_send(command))
    }
}

fn view(entry: &Entry) -> SessionView {
    let published = lock(&entry.published);
    SessionView {
        info: entry.info.clone(),
        stats: StatsView::from(&published.stats),
        latency: published.latency,
        bot: published.bot.as_deref().cloned(),
        leg: published.leg.clone(),
    }
}

/// Fan-out of call events to `/v1/events` subscribers.
///
/// Bounded: a subscriber that falls more than [`EventHub::CAPACITY`] events
/// behind loses the oldest ones, and the loss is counted; a call never waits
/// for a subscriber.
#[derive(Debug)]
pub struct EventHub {
    sender: broadcast::Sender<PublishedEvent>,
}

impl EventHub {
    /// Events a subscriber may fall behind before it loses some.
    pub const CAPACITY: usize = 4096;

    /// A hub with no subscribers.
    #[must_use]
    pub fn new() -> Arc<Self> {
        let (sender, _) = broadcast::channel(Self::CAPACITY);
        Arc::new(EventHub { sender })
    }

    /// Whether anyone listens (formatting an event is skipped otherwise).
    #[must_use]
    pub fn has_subscribers(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    /// A new subscriber, seeing events from now on.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<PublishedEvent> {
        self.sender.subscribe()
    }

    /// Publishes one event: a JSON object with `event`, `stream_sid`,
    /// `call_sid` and the event's own fields.
    pub fn publish(&self, stream_sid: &str, call_sid: &str, event: &CallEvent) {
        if !self.has_subscribers() {
            return;
        }
        let mut object = serde_json::Map::new();
        object.insert("event".into(), event.name().into());
        object.insert("stream_sid".into(), stream_sid.into());
        object.insert("call_sid".into(), call_sid.into());
        match event {
            CallEvent::Bridge(e) => match *e {
                BridgeEvent::SpeechStarted { media_ms }
                | BridgeEvent::SpeechStopped { media_ms }
                | BridgeEvent::BargeIn { media_ms } => {
                    object.insert("media_ms".into(), media_ms.into());
                }
                BridgeEvent::Dtmf { digit } | BridgeEvent::BackendDtmf { digit } => {
                    object.insert("digit".into(), digit.to_string().into());
                }
                BridgeEvent::MarkPlayed { id } | BridgeEvent::MarkCleared { id } => {
                    object.insert("mark".into(), id.into());
                }
                _ => {}
            },
            CallEvent::Ended { reason } => {
                object.insert("reason".into(), (*reason).into());
            }
        }
        let json: Arc<str> = serde_json::Value::Object(object).to_string().into();
        // An error only means every subscriber left since the check above.
        let _ = self.sender.send(PublishedEvent { name: Cow::Borrowed(event.name()), json, remote: false });
    }
}

impl EventHub {
    /// Publishes an event that is not a stream's (the call's life as
    /// Twilio's status callbacks tell it): `event` and `fields`, in order.
    pub fn publish_fields(&self, event: &'static str, fields: &[(&str, &str)]) {
        if !self.has_subscribers() {
            return;
        }
        let mut object = serde_json::Map::new();
        object.insert("event".into(), event.into());
        for (name, value) in fields {
            object.insert((*name).to_owned(), (*value).into());
        }
        let json: Arc<str> = serde_json::Value::Object(object).to_string().into();
        let _ = self.sender.send(PublishedEvent { name: Cow::Borrowed(event), json, remote: false });
    }

    /// Publishes another instance's event (from the store's `LISTEN`), as
    /// it came: its JSON carries the `instance` that published it.
    pub fn publish_remote(&self, name: String, json: Arc<str>) {
        let _ = self.sender.send(PublishedEvent { name: Cow::Owned(name), json, remote: true });
    }
}

/// An event as subscribers receive it.
#[derive(Clone, Debug)]
pub struct PublishedEvent {
    /// The `event` field, for the SSE `event:` line.
    pub name: Cow<'static, str>,
    /// The whole event as one JSON object.
    pub json: Arc<str>,
    /// Whether another instance published it (the store does not send it on).
    pub remote: bool,
}

/// An event a call reports to the control plane.
#[derive(Clone, Copy, Debug)]
pub enum CallEvent {
    /// Something the bridge reported.
    Bridge(BridgeEvent),
    /// The call is over and its record is written.
    Ended {
        /// The end reason's name.
        reason: &'static str,
    },
}

impl CallEvent {
    /// The `event` field.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            CallEvent::Bridge(e) => e.name(),
            CallEvent::Ended { .. } => "call_ended",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(sid: &str, started_at: &str) -> SessionInfo {
        SessionInfo {
            stream_sid: sid.into(),
            call_sid: "CA1".into(),
            account_sid: "AC1".into(),
            from: None,
            to: None,
            started_at: started_at.into(),
            route: None,
            worker: 0,
            rtp_port: 40_000,
            leg: "rtp",
        }
    }

    #[test]
    fn registration_lives_as_long_as_its_handle_and_refuses_duplicates() {
        let dir = Directory::new();
        let (tx, mut rx) = command_channel(4);
        let reg = dir.register(info("MZb", "2026-01-01T00:00:01Z"), tx.clone()).unwrap();
        assert!(dir.register(info("MZb", "2026-01-01T00:00:02Z"), tx.clone()).is_none());
        let _other = dir.register(info("MZa", "2026-01-01T00:00:00Z"), tx).unwrap();
        let sids: Vec<_> = dir.list().into_iter().map(|v| v.info.stream_sid).collect();
        assert_eq!(sids, ["MZa", "MZb"]);
        let stats = CallStats { twilio_frames_in: 7, ..CallStats::default() };
        assert_eq!(reg.publish(&stats), CallStats::default(), "nothing was published before");
        assert_eq!(dir.get("MZb").unwrap().stats.inbound_frames, 7);
        // What it hands back is what the call last counted in metrics.
        let later = CallStats { twilio_frames_in: 9, ..CallStats::default() };
        assert_eq!(reg.publish(&later), stats);
        assert!(dir.command("MZb", CallCommand::Hangup));
        assert_eq!(rx.try_recv(), Some(CallCommand::Hangup));
        drop(reg);
        assert!(dir.get("MZb").is_none());
        assert!(!dir.command("MZb", CallCommand::Hangup));
        assert_eq!(dir.len(), 1);
    }

    #[test]
    fn the_inbox_is_bounded_and_closes_with_its_call() {
        let (tx, mut rx) = command_channel(2);
        assert_eq!(rx.try_recv(), None);
        assert!(tx.try_send(CallCommand::Hangup));
        let directory_copy = tx.clone();
        assert!(directory_copy.try_send(CallCommand::Hangup), "a clone feeds the same inbox");
        assert!(!tx.try_send(CallCommand::Hangup), "a third command is over the bound");
        assert_eq!(rx.try_recv(), Some(CallCommand::Hangup));
        assert!(tx.try_send(CallCommand::Hangup), "room again once one is taken");
        drop(rx);
        assert!(!tx.try_send(CallCommand::Hangup), "nobody listens any more");
    }

    #[test]
    fn a_command_from_another_thread_wakes_the_waiting_call() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let (tx, mut rx) = command_channel(4);
        let got = runtime.block_on(async move {
            let sender = std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(20));
                assert!(tx.try_send(CallCommand::Hangup));
            });
            let got = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await;
            sender.join().unwrap();
            got
        });
        assert_eq!(got, Ok(CallCommand::Hangup));
    }

    #[test]
    fn events_are_json_and_only_built_for_subscribers() {
        let hub = EventHub::new();
        hub.publish("MZ1", "CA1", &CallEvent::Bridge(BridgeEvent::BargeIn { media_ms: 40 }));
        let mut rx = hub.subscribe();
        hub.publish("MZ1", "CA1", &CallEvent::Bridge(BridgeEvent::Dtmf { digit: '#' }));
        hub.publish("MZ1", "CA1", &CallEvent::Ended { reason: "twilio_stop" });
        let first = rx.try_recv().unwrap();
        assert_eq!(first.name, "dtmf");
        let first: serde_json::Value = serde_json::from_str(&first.json).unwrap();
        assert_eq!(first["event"], "dtmf");
        assert_eq!(first["digit"], "#");
        assert_eq!(first["stream_sid"], "MZ1");
        let second: serde_json::Value = serde_json::from_str(&rx.try_recv().unwrap().json).unwrap();
        assert_eq!(
            (second["event"].as_str(), second["reason"].as_str()),
            (Some("call_ended"), Some("twilio_stop"))
        );
        assert!(rx.try_recv().is_err());
    }
}
