//! Admission of a publish or play: its address, its token, where its room
//! lives (here; on another shard, which the connection is handed over to; or
//! nowhere yet, created for a publisher if allowed) and who the client is in
//! it; a refusal (an `onStatus` error, or an HTTP status); then the start of
//! a publish (a stale push of the same name taken over) or of a play (a
//! participant's stream, or the room's program). Also where a connection's
//! other events go: media, and a publisher that stopped.

use std::time::Instant;

use super::connections::Role;
use super::{Hub, Place, Rooms};
use crate::output::{Action, Output, Outputs};
use crate::participants::{Kinds, Participants, Taken};
use crate::relay::FlvTarget;
use crate::rtmp::address::{self, Address};
use crate::rtmp::conn::{Event, STREAM_ID};
use crate::rtmp::http;
use crate::rtmp::stream::GopCache;
use crate::transcode::Job;
use gateway_ring::msg::{participant_key, Direction, EndReason, Event as RingEvent};
use gateway_ring::participant::{resolve, NameError};
use gateway_ring::RoomId;

impl Hub {
    /// Refuses a publish or play: an `onStatus` error `code` to an RTMP
    /// client, the HTTP `status` to an HTTP-FLV one; then closes it.
    pub(super) fn reject(
        &mut self,
        idx: u32,
        code: &str,
        status: u16,
        why: &str,
        actions: &mut Outputs,
    ) {
        if let Some(st) = self.conns.get_mut(&idx) {
            if st.http {
                st.queue.push_control(http::error_response(status, why));
                actions.rtmp(Action::Wake(idx));
            } else {
                st.conn.reject(STREAM_ID, code, why);
            }
        }
        self.stats.rejected += 1;
        self.flush_conn(idx, actions);
        actions.rtmp(Action::Close {
            idx,
            why: why.to_string(),
            flush: true,
        });
    }

    /// Handles one connection event; also called by the shard that received
    /// a handed-over connection, with the event that named its room.
    pub fn on_event(
        &mut self,
        now: Instant,
        idx: u32,
        ev: Event,
        rooms: &mut dyn Rooms,
        actions: &mut Outputs,
    ) {
        match ev {
            Event::Publish {
                ref app,
                ref key,
                ref query,
            }
            | Event::Play {
                ref app,
                ref key,
                ref query,
            } => {
                let publish = matches!(ev, Event::Publish { .. });
                let (bad, not_found) = if publish {
                    ("NetStream.Publish.BadName", "NetStream.Publish.BadName")
                } else {
                    (
                        "NetStream.Play.StreamNotFound",
                        "NetStream.Play.StreamNotFound",
                    )
                };
                // One stream per connection at a time (a publisher that
                // stopped may publish again).
                if self.conns.get(&idx).is_some_and(|c| c.role != Role::New) {
                    let why = "this connection already publishes or plays";
                    return self.reject(idx, bad, 400, why, actions);
                }
                if self.draining {
                    let code = if publish {
                        "NetStream.Publish.Rejected"
                    } else {
                        "NetStream.Play.Failed"
                    };
                    let why = "this node is draining: connect to another node";
                    return self.reject(idx, code, 503, why, actions);
                }
                let addr = match address::parse(app, key, query) {
                    Ok(a) => a,
                    Err(why) => return self.reject(idx, bad, 400, &why, actions),
                };
                let claim = match rooms.authorize(&addr.room, publish, addr.token.as_deref()) {
                    Ok(claim) => claim,
                    Err(why) => {
                        let code = if publish {
                            "NetStream.Publish.Unauthorized"
                        } else {
                            "NetStream.Play.Failed"
                        };
                        return self.reject(idx, code, 403, &why, actions);
                    }
                };
                // Ok: the room is here; Err: its owner, another shard,
                // relays the stream (or program) a player here asks for.
                let here: Result<RoomId, u32> = match rooms.place(&addr.room) {
                    Place::Local(room) => Ok(room),
                    Place::Remote(shard) if !publish => Err(shard),
                    Place::Remote(shard) => {
                        actions.rtmp(Action::Handoff {
                            idx,
                            shard,
                            events: vec![ev.clone()],
                        });
                        return;
                    }
                    Place::Missing if publish => match rooms.create(&addr.room) {
                        Some(room) => Ok(room),
                        None => {
                            let why = format!(
                                "no room {:?}, and creating rooms on publish is off",
                                addr.room
                            );
                            return self.reject(idx, not_found, 404, &why, actions);
                        }
                    },
                    Place::Missing => {
                        let why = format!("no stream {:?}", addr.room);
                        return self.reject(idx, not_found, 404, &why, actions);
                    }
                };
                // Who the client is: the token's participant, else the
                // path's NAME (a push) or `?participant=`, else generated.
                let asked = match (&addr.name, &addr.participant) {
                    (Some(n), Some(q)) if publish && n != q => {
                        let why = format!(
                            "the stream name {n:?} and ?participant={q:?} name different participants"
                        );
                        return self.reject(idx, bad, 400, &why, actions);
                    }
                    (Some(n), _) if publish => Some(n.clone()),
                    (_, q) => q.clone(),
                };
                let random = rooms.random();
                let (me, generated) = match resolve(claim.as_deref(), asked.as_deref(), random) {
                    Ok(x) => x,
                    Err(NameError::Bad(why)) => return self.reject(idx, bad, 400, &why, actions),
                    Err(NameError::NotYours(why)) => {
                        let code = if publish {
                            "NetStream.Publish.Unauthorized"
                        } else {
                            "NetStream.Play.Failed"
                        };
                        return self.reject(idx, code, 403, &why, actions);
                    }
                };
                if let Some(st) = self.conns.get_mut(&idx) {
                    st.name = me.clone();
                }
                let parts = rooms.participants();
                match (here, &addr.name) {
                    (Ok(room), _) if publish => {
                        self.start_publish(now, idx, room, &addr, &me, generated, parts, actions)
                    }
                    (Ok(room), _) => {
                        self.start_play(now, idx, room, &addr, &me, generated, parts, actions)
                    }
                    (Err(owner), Some(name)) => {
                        let shown = format!("{}/{name}", addr.room);
                        let target = FlvTarget::Stream { name: name.clone() };
                        self.play_relayed(
                            now, idx, owner, &addr.room, target, shown, parts, actions,
                        )
                    }
                    (Err(owner), None) => {
                        // Anonymous players (a generated name) share one program.
                        let me = if generated { "" } else { me.as_str() };
                        let target = FlvTarget::Program { me: me.to_string() };
                        let shown = addr.room.clone();
                        self.play_relayed(
                            now, idx, owner, &addr.room, target, shown, parts, actions,
                        )
                    }
                }
            }
            Event::Media(m) => self.on_media(now, idx, m, rooms.participants(), actions),
            Event::Stopped => {
                let Some(st) = self.conns.get_mut(&idx) else {
                    return;
                };
                if !matches!(st.role, Role::Publisher { .. }) {
                    return;
                }
                let role = std::mem::replace(&mut st.role, Role::New);
                if let Some(session) = st.session.take() {
                    self.out.event(RingEvent::SessionEnded {
                        session,
                        reason: EndReason::RtmpClosed,
                    });
                }
                let publishing = std::mem::take(&mut st.publishing);
                let joined = st.joined.take();
                let parts = rooms.participants();
                if let (Some(pid), true) = (joined, publishing) {
                    parts.unpublish(pid, Kinds::BOTH);
                }
                self.detach(now, idx, role, parts);
                // The connection may publish again, as anyone: a new session.
                if let Some(pid) = joined {
                    parts.leave(pid);
                }
            }
            Event::Unknown(_) => self.flush_conn(idx, actions),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn start_publish(
        &mut self,
        now: Instant,
        idx: u32,
        room: RoomId,
        addr: &Address,
        me: &str,
        generated: bool,
        parts: &mut Participants,
        actions: &mut Outputs,
    ) {
        let pid = parts.join(room, me);
        match parts.publish(pid, Kinds::BOTH, true) {
            Ok(()) => {}
            Err(Taken::ByRtmp) => {
                // The same name pushes again (a phone that moved from Wi-Fi
                // to 4G): the stale push ends, the new one continues its
                // stream and players at its first keyframe.
                let old = self.streams.get(&pid).and_then(|s| s.publisher);
                if let Some(old) = old.filter(|&o| o != idx) {
                    self.take_over(old, actions);
                }
            }
            Err(Taken::ByWebrtcOrRtp) => {
                parts.leave(pid);
                let why = format!(
                    "participant {me:?} already publishes in room {:?} over WebRTC or RTP",
                    addr.room
                );
                return self.reject(idx, "NetStream.Publish.BadName", 400, &why, actions);
            }
        }
        let key = participant_key(me);
        let s = self.stream(room, pid, key);
        s.publisher = Some(idx);
        s.pushes = s.pushes.wrapping_add(1);
        // A new publisher's GOP starts afresh; headers come with its first
        // messages. An RTMP publisher takes over from bridged RTP.
        s.cache = GopCache::new(s.cache.enabled);
        s.bridge = None;
        s.rtp = None;
        self.out.push(Output::Transcode {
            job: Job::Reset { stream: pid },
            from: None,
        });
        let shown = match &addr.name {
            Some(_) => format!("{}/{me}", addr.room),
            None if generated => format!("{} as participant {me}", addr.room),
            None => format!("{} as {me}", addr.room),
        };
        if let Some(st) = self.conns.get_mut(&idx) {
            st.role = Role::Publisher { room, pid };
            st.joined = Some(pid);
            st.publishing = true;
            st.conn.accept_publish(&shown, self.limits.media);
        }
        self.announce(now, idx, room, Direction::Publish);
        self.flush_conn(idx, actions);
        self.choose_all(now, room, parts, actions);
    }

    /// Ends publisher `old`, whose name a new connection pushes: it keeps
    /// its participant session until closed, but no longer publishes.
    fn take_over(&mut self, old: u32, actions: &mut Outputs) {
        let Some(st) = self.conns.get_mut(&old) else {
            return;
        };
        st.role = Role::New;
        st.publishing = false;
        if let Some(session) = st.session.take() {
            self.out.event(RingEvent::SessionEnded {
                session,
                reason: EndReason::TakenOver,
            });
        }
        actions.rtmp(Action::Close {
            idx: old,
            why: "taken over by a new publish of the same participant".into(),
            flush: false,
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn start_play(
        &mut self,
        now: Instant,
        idx: u32,
        room: RoomId,
        addr: &Address,
        me: &str,
        generated: bool,
        parts: &mut Participants,
        actions: &mut Outputs,
    ) {
        // NAME's stream, whoever publishes it: NAME must be in the room (a
        // session of any kind); its stream waits for NAME to publish (again).
        if let Some(name) = &addr.name {
            let Some(pid) = parts.find(room, name) else {
                let why = format!("no participant {name:?} in room {:?}", addr.room);
                return self.reject(idx, "NetStream.Play.StreamNotFound", 404, &why, actions);
            };
            let shown = format!("{}/{name}", addr.room);
            let key = participant_key(name);
            return self.begin_play(now, idx, room, &shown, Some(name), pid, key, parts, actions);
        }
        let shown = addr.room.clone();
        if let Some(st) = self.conns.get_mut(&idx) {
            if st.http {
                st.queue.push_control(http::stream_head());
                actions.rtmp(Action::Wake(idx));
            } else {
                st.conn.accept_play(&format!("{shown} as {me}"));
            }
        }
        self.announce(now, idx, room, Direction::Subscribe);
        self.flush_conn(idx, actions);
        // The room's program. Anonymous players (a generated name) share
        // one, which leaves nobody out.
        let me = if generated { "" } else { me };
        self.attach_program(now, idx, room, me, parts, actions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::fixtures::*;
    use crate::output::Outputs;
    use rml_amf0::Amf0Value;
    use std::collections::HashMap;

    /// A phone that moved from Wi-Fi to 4G pushes its name again: the stale
    /// push is closed at once and the players go on with the new one.
    #[test]
    fn a_new_push_of_a_live_name_takes_the_stale_one_over() {
        let mut rooms = OneRoom::creating();
        let mut h = hub_with(3);
        send(&mut h, &mut rooms, 0, "publish", "r/bob");
        keyframe(&mut h, &mut rooms, 0, 1);
        send(&mut h, &mut rooms, 1, "play", "r/bob");
        let a = send(&mut h, &mut rooms, 2, "publish", "r/bob");
        assert!(
            closed(&a, 0).is_some_and(|w| w.contains("taken over")),
            "{a:?}"
        );
        assert_eq!(closed(&a, 2), None);
        h.remove(Instant::now(), 0, &mut rooms.parts);
        // The stale connection's late media is not the stream's any more.
        keyframe(&mut h, &mut rooms, 0, 9);
        keyframe(&mut h, &mut rooms, 2, 2);
        assert_eq!(marks(&mut h, 1), vec![1, 2]);
        assert!(rooms
            .parts
            .find(R77, "bob")
            .is_some_and(|p| rooms.parts.is_publishing(p)));
    }

    /// A publisher that stops and publishes again on its connection is a
    /// new session; its names are forgotten once it closes. A second
    /// `play` on a playing connection is refused.
    #[test]
    fn a_connection_holds_one_stream_at_a_time() {
        let mut rooms = OneRoom::creating();
        let mut h = hub_with(2);
        send(&mut h, &mut rooms, 0, "publish", "r/bob");
        let mut a = Outputs::default();
        h.on_bytes(
            Instant::now(),
            0,
            &command("FCUnpublish", vec![]),
            &mut rooms,
            &mut a,
        );
        assert!(rooms.parts.find(R77, "bob").is_none(), "bob left");
        let again = send(&mut h, &mut rooms, 0, "publish", "r/carol");
        assert_eq!(closed(&again, 0), None, "{again:?}");
        h.remove(Instant::now(), 0, &mut rooms.parts);
        assert!(rooms.parts.is_empty(), "nobody is left behind");
        send(&mut h, &mut rooms, 1, "publish", "r/dave");
        let a = send(&mut h, &mut rooms, 1, "play", "r/dave");
        assert!(
            closed(&a, 1).is_some_and(|w| w.contains("already")),
            "{a:?}"
        );
    }

    #[test]
    fn unknown_rooms_apps_and_remote_rooms() {
        let mut rooms = OneRoom {
            rooms: HashMap::from([("far".to_string(), Place::Remote(1))]),
            allow_create: false,
            ..Default::default()
        };
        let mut h = hub_with(4);
        let t0 = Instant::now();
        let mut a = Outputs::default();
        let play = [
            connect(),
            command("play", vec![Amf0Value::Utf8String("none".into())]),
        ]
        .concat();
        h.on_bytes(t0, 0, &play, &mut rooms, &mut a);
        assert!(
            a.actions().any(
                |x| matches!(x, Action::Close { idx: 0, why, .. } if why.contains("no stream"))
            ),
            "{a:?}"
        );
        a.clear();
        let publish = [
            connect(),
            command("publish", vec![Amf0Value::Utf8String("new".into())]),
        ]
        .concat();
        h.on_bytes(t0, 1, &publish, &mut rooms, &mut a);
        assert!(
            a.actions()
                .any(|x| matches!(x, Action::Close { idx: 1, why, .. } if why.contains("off"))),
            "{a:?}"
        );
        a.clear();
        // A publisher of a room another shard owns is handed over to it;
        // a player asks the owner for the room's program and waits.
        let far = |cmd: &str| {
            [
                connect(),
                command(cmd, vec![Amf0Value::Utf8String("far".into())]),
            ]
            .concat()
        };
        h.on_bytes(t0, 2, &far("publish"), &mut rooms, &mut a);
        assert!(
            a.actions().any(|x| matches!(
                x,
                Action::Handoff {
                    idx: 2,
                    shard: 1,
                    ..
                }
            )),
            "{a:?}"
        );
        h.on_bytes(t0, 3, &far("play"), &mut rooms, &mut a);
        let asked = h.out.take(|o| match o {
            Output::Relay { to: 1, msg } => crate::output::Pick::Take(msg),
            o => crate::output::Pick::Keep(o),
        });
        assert!(
            matches!(&asked[..], [crate::relay::Message::FlvSubscribe { room, target: FlvTarget::Program { .. } }] if room == "far"),
            "{asked:?}"
        );
        assert!(!h.is_set_up(3), "it waits for the owner");
    }
}
