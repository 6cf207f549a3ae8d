//! drasi-store-operator (skeleton; being written).
