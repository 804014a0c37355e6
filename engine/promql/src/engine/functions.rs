//! Function calls (being written).
