//! Messages waiting for the proxy to send them to the bot: a bounded ring of
//! reused buffers, so queueing a message never allocates once every slot has
//! grown to the largest message it carries.

/// Slots in the ring: the bound on messages waiting for the bot. Each slot
/// keeps the capacity of the largest message it carried (up to 960 bytes of
/// 24 kHz audio), so this bounds a leg's heap as well (a config key candidate).
pub(crate) const SLOTS: usize = 32;

/// Slots caller audio may fill (480 ms). The rest are kept for control messages
/// (mark echoes, DTMF, `stop`, the close), so a bot that reads slowly loses
/// audio (counted) before it loses an event.
pub(crate) const AUDIO_SLOTS: usize = 24;

/// What a slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    Binary,
    Close,
}

/// A bounded FIFO of messages.
#[derive(Debug)]
pub(crate) struct Outbox {
    slots: Vec<(Kind, Vec<u8>)>,
    head: usize,
    len: usize,
    /// Whether a close was queued: nothing may follow it.
    closed: bool,
}

impl Outbox {
    pub(crate) fn new() -> Self {
        Outbox {
            slots: (0..SLOTS).map(|_| (Kind::Close, Vec::new())).collect(),
            head: 0,
            len: 0,
            closed: false,
        }
    }

    /// Queues a message written by `write` into a cleared, reused buffer.
    /// Returns `false` (and writes nothing) when the ring is full for this
    /// kind of message, or the close was already queued.
    pub(crate) fn push(&mut self, kind: Kind, audio: bool, write: impl FnOnce(&mut Vec<u8>)) -> bool {
        let limit = if audio { AUDIO_SLOTS } else { SLOTS };
        if self.closed || self.len >= limit {
            return false;
        }
        let slot = &mut self.slots[(self.head + self.len) % SLOTS];
        slot.0 = kind;
        slot.1.clear();
        write(&mut slot.1);
        self.len += 1;
        self.closed = kind == Kind::Close;
        true
    }

    /// Takes the oldest message; it stays readable until the next push.
    pub(crate) fn pop(&mut self) -> Option<(Kind, &[u8])> {
        if self.len == 0 {
            return None;
        }
        let slot = &self.slots[self.head];
        self.head = (self.head + 1) % SLOTS;
        self.len -= 1;
        Some((slot.0, &slot.1))
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_leaves_room_for_control_and_nothing_follows_a_close() {
        let mut o = Outbox::new();
        for i in 0..AUDIO_SLOTS {
            assert!(o.push(Kind::Binary, true, |b| b.push(i as u8)));
        }
        assert!(!o.push(Kind::Binary, true, |_| {}), "audio is bounded");
        for _ in AUDIO_SLOTS..SLOTS {
            assert!(o.push(Kind::Text, false, |b| b.push(b'x')));
        }
        assert!(!o.push(Kind::Text, false, |_| {}), "the ring is bounded");
        assert_eq!(o.pop(), Some((Kind::Binary, &[0u8][..])));
        assert!(o.push(Kind::Close, false, |_| {}));
        assert!(!o.push(Kind::Text, false, |_| {}), "nothing after a close");
        assert_eq!(o.len(), SLOTS);
        let mut last = None;
        while let Some((kind, _)) = o.pop() {
            last = Some(kind);
        }
        assert_eq!(last, Some(Kind::Close));
    }
}
