fn main() {
    rcluster_cli::main()
}
