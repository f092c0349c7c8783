from octcli.main import app

app(prog_name="oct")
