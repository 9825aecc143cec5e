"""Recipe `math`: TRL GRPOTrainer through the contract adapter, math-verify rewards, the paper's protocol."""
