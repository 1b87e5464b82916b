//! (filled in by the ingestion work, issue 3)
