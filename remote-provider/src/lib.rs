//! drasi-state-store-remote (skeleton; being written).
