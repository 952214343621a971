//! `hookwire serve`, end to end.
