//! Shared-memory rings between the controlplane and the dataplane.
//!
//! The two processes share one file (under `/dev/shm`). It holds a [`layout`]
//! header, then for every shard one command ring (controlplane → shard) and one
//! event ring (shard → controlplane). Each ring is single-producer,
//! single-consumer, carries fixed-size slots and keeps its head and tail on
//! separate cache lines. Messages are the versioned [`msg::Command`] and
//! [`msg::Event`] enums, encoded into a slot as explicit little-endian bytes,
//! so a corrupt slot is a decode error, never undefined behaviour. The rooms
//! and sessions they name are [`RoomId`]s and [`SessionId`]s on both sides
//! (see [`ids`] for which process gives which).
//!
//! Drive loop, controlplane side:
//!
//! ```no_run
//! use gateway_ring::{Region, msg::{Command, Event}};
//! let region = Region::create("/dev/shm/doc-example", 2).unwrap();
//! let mut cmd = region.command_producer(0);
//! let mut evt = region.event_consumer(0);
//! cmd.push(&Command::Resync).unwrap();
//! while let Some(event) = evt.pop() {
//!     match event { Ok(Event::ResyncDone { .. }) => break, _ => {} }
//! }
//! ```
//!
//! The shard side mirrors it with [`Region::command_consumer`] and
//! [`Region::event_producer`], polled once per io_uring loop turn.

pub mod ids;
pub mod layout;
pub mod limits;
pub mod msg;
pub mod participant;
pub mod spsc;
pub mod token;

pub use ids::{ControlIds, RoomId, SessionId};
pub use layout::{Doorbell, Region, RegionError};
pub use spsc::{Consumer, Full, Producer};
