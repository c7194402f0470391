//! `process.Process`: starting, attaching to, feeding and signalling processes.
