//! Keys and certificates: rustls configurations (server with required client certificates,
//! client for the MROs) and the report-signing keys (Ed25519 JWS, rotation, verification).
//! Imports nothing of ours above core.

pub mod signing;
pub mod tls;
