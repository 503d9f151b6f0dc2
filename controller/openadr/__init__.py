"""The OpenADR 2.0b VEN: the utility's DR events in, opt responses and telemetry out.

``signals`` maps a VTN event to feederd DR events (pure); ``settings`` reads ``[openadr]`` and
its secrets; ``ven`` is the task that registers, polls, answers and reports.
"""
