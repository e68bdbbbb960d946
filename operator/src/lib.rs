//! rcluster operator library.
