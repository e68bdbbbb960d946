//! rcluster data node.
