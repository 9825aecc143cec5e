"""Recipe `tiny`: procedural arithmetic, a small decoder warm-started by SFT, our lean GRPO loop."""
