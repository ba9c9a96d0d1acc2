"""Load tests of the Tasks API: Locust scenario, runner with thresholds, scale check."""
