//! The AWS adapter (placeholder until the adapter lands).
