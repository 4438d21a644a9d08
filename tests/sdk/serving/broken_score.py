def init():
    raise FileNotFoundError("no model.pkl here")


def run(raw_data):
    return raw_data
