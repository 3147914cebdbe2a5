"""What the panels show besides the running jobs, kept in one place (main thread only).

``panel`` holds the last error and the last result line of the ONet panel and the state of
the preferences' check and install buttons. Jobs report through ``jobs.transition``, which
calls ``show_error``/``show_result`` here; operators report input problems the same way.
"""

from dataclasses import dataclass


@dataclass
class PanelStatus:
    """The panel's message lines and the preferences' button states."""

    last_error: str = ""
    last_result: str = ""
    check: tuple = None  # (ok, text) of the interpreter check
    check_running: bool = False
    install: object = None  # installer.InstallTask of the running or last install
    generation: int = 0  # bumped when anything the panels show changed

    def show_error(self, message):
        self.last_error = message
        self.generation += 1

    def show_result(self, message, clear_error=False):
        self.last_result = message
        if clear_error:
            self.last_error = ""
        self.generation += 1

    def clear_messages(self):
        """Forget the error and result lines (another file was opened)."""
        self.last_error = self.last_result = ""
        self.generation += 1

    def clear_error(self):
        self.last_error = ""
        self.generation += 1

    def install_running(self):
        return self.install is not None and self.install.state == "running"


panel = PanelStatus()
