"""IoT callback receiver and event router."""

__version__ = "0.1.0"
