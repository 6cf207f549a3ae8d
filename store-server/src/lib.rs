//! drasi-store-server (skeleton; being written).
