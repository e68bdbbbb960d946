//! rcluster client library and command line (placeholder until the client lands).
