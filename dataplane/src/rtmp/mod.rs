//! RTMP (Adobe RTMP 1.0 spec): chunk stream, AMF0 commands, FLV tag bodies.

pub mod address;
pub mod chunk;
pub mod conn;
pub mod http;
pub mod meta;
pub mod stream;
