//! Spool directory mechanics (filled in below).
