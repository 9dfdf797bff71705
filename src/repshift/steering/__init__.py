"""Steering: probe, class-mean and SAE directions written back into the residual stream at the output of block L."""
