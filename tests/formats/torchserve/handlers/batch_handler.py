"""TorchServe style, module-level handle(): each request answered with its body and its batch's
bodies; a batch holding "mismatch" answers one item short, one holding "raise" raises."""


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes | bytearray) else value


def handle(data, context):
    if data is None:  # TorchServe calls handle(None, context) once to initialize
        return None
    bodies = [_text(row.get("body")) for row in data]
    if "mismatch" in bodies:
        return bodies[:-1]
    if "raise" in bodies:
        raise RuntimeError("asked to fail")
    answers = []
    for idx, body in enumerate(bodies):
        answers.append({"body": body, "batch": bodies, "request_id": context.get_request_id(idx),
                        "x_mode": context.get_request_header(idx, "X-Mode")})
    return answers
