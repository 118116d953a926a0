"""What only the CPU backend needs: dot-form convolutions and a faster allocator."""
