"""Boot entry point: start the meter application (firmware/app.py). Ctrl-C followed by more console input within
2 s (mpremote, `slm deploy`, a person) returns to the REPL; a lone Ctrl-C does not stop the meter (app.run)."""

import app

app.main()
