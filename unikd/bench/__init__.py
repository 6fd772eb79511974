"""The one benchmark layer of both tasks: grid files, the stage queue that several processes share, the report
of every table, and the interleaved speed harness. Task-independent: a front end supplies how one stage trains."""
