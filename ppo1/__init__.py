"""ppo1: PPO (Schulman et al. 2017) for Atari from pixels, faithful to OpenAI baselines ppo1."""

__version__ = "0.1.0"
