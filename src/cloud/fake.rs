//! The in-memory fake cloud (placeholder until it lands).
