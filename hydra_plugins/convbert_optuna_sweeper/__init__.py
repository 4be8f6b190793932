"""A thin Optuna sweeper for Hydra (current Optuna; hydra-optuna-sweeper pins optuna<3). See optuna_sweeper.py."""
