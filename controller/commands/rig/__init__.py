"""The product composed with the HIL rig: the only place (with the CLI commands) that imports
``hil``. ``config`` turns a rig into the feederd config a commissioning engineer would write,
``stepper`` runs the daemon and the rig on one simulated clock, ``demo`` and ``scenario`` are
what ``feederd demo`` and ``feederd sim`` run."""
