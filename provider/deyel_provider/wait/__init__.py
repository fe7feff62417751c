"""What the sensor and the triggers share to wait on an instance's workflow state."""
