fn main() {
    rcluster_client::cli::main()
}
