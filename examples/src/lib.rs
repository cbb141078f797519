//! Examples for wzp.
