//! The shard's sending side: the turn's held media fanned out subscriber
//! by subscriber into send slots and GSO batches ([`super::gso`]), control
//! datagrams, and the send completions that give slots back.

use super::*;

impl Shard {
    /// Fans out the media held this turn, subscriber by subscriber: each
    /// egress gets all of the turn's packets of its room at once (one GSO
    /// batch, its SRTP keys loaded once), and sealed batches go to the
    /// kernel every [`SUBMIT_EVERY_BYTES`] rather than at the turn's end.
    /// Each egress still gets its room's packets in arrival order. Then the
    /// receive buffers go back to the kernel.
    pub(super) fn fan_out_held(&mut self, now: Instant) {
        if self.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.held);
        // Other shards' players first: they have a hop more to go.
        for p in &held {
            let plain = Plain::Recv {
                bid: p.bid,
                start: p.start,
            };
            self.relay_out(&p.inbound, &plain);
        }
        for (i, first) in held.iter().enumerate() {
            let room = first.inbound.room;
            // Each room once, at its first packet.
            if held[..i].iter().any(|p| p.inbound.room == room) {
                continue;
            }
            self.fanout.clear();
            self.fanout.extend_from_slice(self.core.egresses(room));
            let mut prepared = 0;
            for k in 0..self.fanout.len() {
                let e = self.fanout[k];
                for p in held[i..].iter().filter(|p| p.inbound.room == room) {
                    prepared += self.send_copy(
                        now,
                        e,
                        &Plain::Recv {
                            bid: p.bid,
                            start: p.start,
                        },
                        &p.inbound,
                    );
                }
                if prepared >= SUBMIT_EVERY_BYTES {
                    prepared = 0;
                    self.seal_batches();
                    self.submit();
                }
            }
        }
        for p in &held {
            self.bufs.recycle(p.bid);
        }
        self.held = held;
        self.held.clear();
    }

    /// Sends `inbound` (its plaintext in `plain`) to every egress of its
    /// room.
    pub(super) fn fan_out(&mut self, now: Instant, plain: &Plain, inbound: &Inbound) {
        self.relay_out(inbound, plain);
        self.fanout.clear();
        self.fanout
            .extend_from_slice(self.core.egresses(inbound.room));
        for k in 0..self.fanout.len() {
            let e = self.fanout[k];
            self.send_copy(now, e, plain, inbound);
        }
    }

    /// Copies `inbound` into a send slot for egress `e`, rewrites and
    /// protects it there and adds it to `e`'s batch. Returns the bytes
    /// queued (0 if `e` does not take it).
    fn send_copy(&mut self, now: Instant, e: Handle, plain: &Plain, inbound: &Inbound) -> usize {
        let Some((fd, slot_idx)) = self.send_slot_for(e) else {
            return 0;
        };
        let src: &[u8] = match plain {
            Plain::Recv { bid, start } => &self.bufs.buf_mut(*bid, start + inbound.len)[*start..],
            Plain::Bytes(b) => b,
        };
        let slot = &mut self.sends[slot_idx as usize];
        // The core and the packetizer bound packets at `rtp::MAX_PACKET`;
        // a send slot is never the place that finds out they did not.
        if inbound.len > slot.buf.len() - MAX_TRAILER || inbound.len > src.len() {
            self.free_sends.push(slot_idx);
            self.core.count_drop(e, DropReason::Oversize);
            return 0;
        }
        // One copy per egress: each receiver's header rewrite and SRTP keys differ.
        slot.buf[..inbound.len].copy_from_slice(&src[..inbound.len]);
        // Contained like ingress: a bug in one egress's rewrite or SRTP ends
        // that egress, and its slot goes back.
        let prepared = contained(|| self.core.prepare_egress(now, e, inbound, &mut slot.buf));
        let Ok(Some((n, dest))) = prepared else {
            self.free_sends.push(slot_idx);
            if let Err(why) = prepared {
                self.end_after_panic(now, e, &why);
            }
            return 0;
        };
        self.send_media(slot_idx, e, fd, dest, n);
        n
    }

    /// Adds a media packet to its egress's batch for this turn.
    fn send_media(
        &mut self,
        slot_idx: u32,
        h: Handle,
        fd: std::os::fd::RawFd,
        dest: std::net::SocketAddrV4,
        n: usize,
    ) {
        let buf = &mut self.sends[slot_idx as usize].buf;
        match self.gso.add(h, fd, dest, slot_idx, buf, n) {
            gso::Add::Joined | gso::Add::Started => {}
            gso::Add::Replaced(old) => self.seal_batch(old),
            gso::Add::Unbatched => self.queue_send(slot_idx, h, fd, dest, n),
        }
    }

    /// Queues the send of batch `idx` (once: sealed batches are skipped).
    fn seal_batch(&mut self, idx: u32) {
        match self.gso.seal(idx) {
            None => {}
            Some(gso::Sealed::Single {
                slot,
                len,
                session,
                fd,
                dest,
            }) => self.queue_send(slot, session, fd, dest, len),
            Some(gso::Sealed::Gso {
                batch,
                fd,
                msg,
                count,
            }) => {
                self.turns.udp_sends += 1;
                self.turns.udp_datagrams += count as u64;
                // MSG_DONTWAIT as for single sends (see `queue_send`).
                let sqe = opcode::SendMsg::new(types::Fd(fd), msg)
                    .flags(libc::MSG_DONTWAIT as u32)
                    .build()
                    .user_data(user_data(OP_GSO_SEND, 0, batch));
                self.push_sqe(&sqe);
            }
        }
    }

    /// Seals every batch opened this turn: before the shard submits.
    pub(super) fn seal_batches(&mut self) {
        let mut open = std::mem::take(&mut self.sealing);
        self.gso.take_open(&mut open);
        for &idx in &open {
            self.seal_batch(idx);
        }
        open.clear();
        self.sealing = open;
    }

    /// Sends `data` from session `from`'s socket (STUN answers, DTLS records,
    /// RTCP, retransmissions): one copy into a send slot, like media.
    pub(super) fn send_control(&mut self, from: Handle, dest: std::net::SocketAddrV4, data: &[u8]) {
        if data.len() > SEND_BUF_SIZE {
            self.core.count_drop(from, DropReason::Send);
            return;
        }
        let Some((fd, slot_idx)) = self.send_slot_for(from) else {
            return;
        };
        self.sends[slot_idx as usize].buf[..data.len()].copy_from_slice(data);
        self.queue_send(slot_idx, from, fd, dest, data.len());
    }

    /// The socket of session `h` and a free send slot (waiting briefly for
    /// one if all are in flight); `None` if the session has no socket, or no
    /// slot came back (counted as a send drop).
    fn send_slot_for(&mut self, h: Handle) -> Option<(std::os::fd::RawFd, u32)> {
        let fd = self
            .sockets
            .get(h as usize)
            .and_then(Option::as_ref)
            .map(|s| s.sock.as_raw_fd())?;
        let slot = self
            .free_sends
            .pop()
            .or_else(|| self.reclaim_sends().then(|| self.free_sends.pop())?);
        if slot.is_none() {
            self.core.count_drop(h, DropReason::Send);
        }
        Some((fd, slot?))
    }

    /// Queues `SendMsg` for send slot `slot_idx` holding `n` bytes.
    fn queue_send(
        &mut self,
        slot_idx: u32,
        from: Handle,
        fd: std::os::fd::RawFd,
        dest: std::net::SocketAddrV4,
        n: usize,
    ) {
        self.turns.udp_sends += 1;
        self.turns.udp_datagrams += 1;
        {
            let slot = &mut self.sends[slot_idx as usize];
            slot.session = from;
            slot.addr = sockaddr_in(dest);
            slot.iov = libc::iovec {
                iov_base: slot.buf.as_mut_ptr() as *mut libc::c_void,
                iov_len: n,
            };
            slot.msg.msg_name = &mut slot.addr as *mut _ as *mut libc::c_void;
            slot.msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            slot.msg.msg_iov = &mut slot.iov;
            slot.msg.msg_iovlen = 1;
            // MSG_DONTWAIT: a send that finds the socket buffer full fails
            // with EAGAIN, counted, instead of being parked in the kernel
            // until the socket drains. Parked sends pinned all send slots and
            // hung a shard under an unpaced ffmpeg burst (seen in gdb).
            let sqe = opcode::SendMsg::new(types::Fd(fd), &slot.msg)
                .flags(libc::MSG_DONTWAIT as u32)
                .build()
                .user_data(user_data(OP_SEND, 0, slot_idx));
            self.push_sqe(&sqe);
        }
    }

    /// Every send slot is in flight (a burst, or a wide fan-out): submit the
    /// queued sends and wait for some to finish. Returns whether a slot is
    /// free now.
    fn reclaim_sends(&mut self) -> bool {
        // Slots waiting in this turn's batches come back only once sent.
        self.seal_batches();
        // Bounded: sends do not wait for socket space (MSG_DONTWAIT), but the
        // shard must not hang on the kernel whatever happens.
        if let Err(e) = self.submit_and_wait(RECLAIM_WAIT) {
            warn!(shard = self.cfg.index, "waiting for sends failed: {e}");
            return false;
        }
        self.collect_completions();
        !self.free_sends.is_empty()
    }

    /// Takes the completion queue: finished sends free their slots at once
    /// (so slots never wait behind a backlog), everything else joins
    /// `cqes` behind what `reap` is working through.
    pub(super) fn collect_completions(&mut self) {
        // Copied out first: handling completions pushes new submissions.
        let mut found = std::mem::take(&mut self.spill);
        found.clear();
        found.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(ud, res, flags) in &found {
            let (op, _, index) = split_user_data(ud);
            match op {
                OP_SEND => self.on_send(index, res),
                OP_GSO_SEND => self.on_gso_send(index, res),
                _ => self.cqes.push_back((ud, res, flags)),
            }
        }
        self.spill = found;
    }

    fn on_send(&mut self, slot_idx: u32, res: i32) {
        let Some(slot) = self.sends.get(slot_idx as usize) else {
            return;
        };
        if res < 0 {
            self.core.count_drop(slot.session, DropReason::Send);
        }
        self.free_sends.push(slot_idx);
    }

    fn on_gso_send(&mut self, batch: u32, res: i32) {
        let Some((session, count)) = self.gso.finish(batch, &mut self.free_sends) else {
            return;
        };
        if res >= 0 {
            return;
        }
        for _ in 0..count {
            self.core.count_drop(session, DropReason::Send);
        }
        // The kernel or the route cannot segment (no checksum offload, an
        // old kernel): send datagram by datagram from now on.
        if matches!(-res, libc::EIO | libc::EINVAL | libc::EOPNOTSUPP) && self.gso.enabled {
            warn!(
                shard = self.cfg.index,
                "UDP GSO refused ({}): sending packets one by one",
                io::Error::from_raw_os_error(-res)
            );
            self.gso.enabled = false;
        }
    }
}
