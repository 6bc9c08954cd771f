"""Boot entry point: start the meter application (firmware/app.py). Ctrl-C returns to the REPL."""

import app

app.main()
