//! The shard's side of its links to the other shards (see [`crate::relay`]):
//! the packets it fans out in a watched room go to the watchers too, and
//! what the other shards left for it is read each turn, its messages into
//! the core and its packets fanned out here like this shard's own.

use std::time::Instant;

use tracing::warn;

use crate::media::Inbound;
use crate::relay::{Item, DRAIN_BUDGET};

use super::{contained, Plain, Shard};

impl Shard {
    /// Relays `inbound` (its plaintext in `plain`) to the shards watching
    /// its room, after the announcements of a publisher new to them.
    pub(super) fn relay_out(&mut self, inbound: &Inbound, plain: &Plain) {
        let Shard {
            relay,
            core,
            announce,
            bufs,
            ..
        } = self;
        let Some(link) = relay.as_mut() else {
            return;
        };
        let shards = core.relay_targets(inbound, announce);
        if shards == 0 {
            return;
        }
        for (to, msg) in announce.drain(..) {
            link.send(to, msg);
        }
        let data: &[u8] = match plain {
            Plain::Recv { bid, start } => &bufs.buf_mut(*bid, start + inbound.len)[*start..],
            Plain::Bytes(b) => b,
        };
        link.send_packet(shards, inbound, data);
    }

    /// What the other shards left for this one, up to [`DRAIN_BUDGET`]
    /// items from each: messages to the core, packets fanned out to this
    /// shard's players. Each item is one input: a panic it causes is
    /// contained, and what it queued discarded.
    pub(super) fn drain_relay(&mut self, now: Instant) {
        let Some(mut link) = self.relay.take() else {
            return;
        };
        link.drain(DRAIN_BUDGET, |from, item| {
            let mark = self.core.output_mark();
            let done = contained(|| match item {
                Item::Message(m) => {
                    self.core.handle_relay_message(now, from, m);
                    None
                }
                Item::Packet(p) => self.core.handle_relayed(now, from, p),
            });
            match done {
                Ok(Some(inbound)) => {
                    if let Item::Packet(p) = item {
                        self.fan_out(now, &Plain::Bytes(p.payload()), &inbound);
                    }
                }
                Ok(None) => {}
                Err(why) => {
                    self.core.discard_outputs(mark);
                    warn!(
                        shard = self.cfg.index,
                        from, "relayed input dropped after a panic: {why}"
                    );
                }
            }
        });
        self.relay = Some(link);
    }

    /// Rings the doorbell of each shard this turn sent something.
    pub(super) fn wake_peers(&mut self) {
        if let Some(link) = self.relay.as_mut() {
            link.wake();
        }
    }

    /// Whether another shard left something this shard has not read.
    pub(super) fn relay_pending(&self) -> bool {
        self.relay.as_ref().is_some_and(|l| l.has_input())
    }
}
