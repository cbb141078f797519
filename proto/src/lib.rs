//! The wzp wire contract.
