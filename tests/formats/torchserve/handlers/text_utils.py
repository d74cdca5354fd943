"""An extra file of the archive (--extra-files), imported by the handler by its plain name."""


def parse_rows(data):
    rows = []
    for row in data:
        value = row.get("data") or row.get("body")
        if isinstance(value, bytes | bytearray):
            value = value.decode("utf-8")
        if isinstance(value, str):
            value = [float(x) for x in value.split(",")]
        rows.append([float(x) for x in value])
    return rows
