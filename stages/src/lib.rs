//! Every wzp stage.
